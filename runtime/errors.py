"""Typed errors shared by every package, each carrying the process exit code.

Exit codes (ARCHITECTURE.md): 0 success, 1 a check failed, 2 bad input or usage.
The CLI turns any :class:`AmalgamError` into its message on stderr and its exit
code, with no traceback.

>>> e = UnknownTapError("model.onnx: no tensor named 'relu9'")
>>> (e.exit_code, isinstance(e, BadInputError))
(2, True)
"""


class AmalgamError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 2


class BadInputError(AmalgamError):
    """A file, field or tensor given by the user is not what was expected."""


class ModelFileError(BadInputError):
    """An ONNX file cannot be read: not ONNX, truncated, too new, unsafe."""


class UnknownTapError(BadInputError):
    """A tensor name that the graph does not have."""


class BoundaryError(BadInputError):
    """A block boundary that is not on the main path (does not dominate the outputs)."""


class UnsupportedOpError(BadInputError):
    """An ONNX op that no converter handles."""


class ConfigError(BadInputError):
    """A config file that does not validate."""


class DataError(BadInputError):
    """A dataset that cannot be read."""


class ExportError(BadInputError):
    """A model that cannot be exported to ONNX, or whose export does not match it."""


class CheckFailed(AmalgamError):
    """A check ran and failed (parity, degradation): exit code 1."""

    exit_code = 1


class ParityError(CheckFailed):
    """Two runners disagree beyond tolerance."""


class DegradationError(CheckFailed):
    """The student falls further below its teachers than allowed."""
