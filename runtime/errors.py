"""Typed errors shared by every package, each carrying the process exit code.

Exit codes (ARCHITECTURE.md): 0 success, 1 a check failed, 2 bad input or usage.
The CLI turns any :class:`AmalgamError` into its message on stderr and its exit
code, with no traceback.

>>> e = UnknownTapError("model.onnx: no tensor named 'relu9'")
>>> (e.exit_code, isinstance(e, BadInputError))
(2, True)
"""

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def first_line(error):
    """The first line of ``error``'s message (colour codes removed), or its type name when
    the message is empty: the part of a library's exception that fits an ``error:`` line.

    >>> first_line(ValueError("bad shape\\n  at node 3"))
    'bad shape'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = _ANSI.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__
