"""The errors the API raises, each with the CLI's exit code (``exit_code``): 2 for bad
input (a file, field or tensor that is not what was expected), 1 for a check that ran
and failed (parity, degradation)."""

from amalgam.runtime.errors import (
    AmalgamError,
    BadInputError,
    BoundaryError,
    CheckFailed,
    ConfigError,
    DataError,
    DegradationError,
    ExportError,
    ModelFileError,
    ParityError,
    UnknownTapError,
    UnsupportedOpError,
)

__all__ = [
    "AmalgamError",
    "BadInputError",
    "BoundaryError",
    "CheckFailed",
    "ConfigError",
    "DataError",
    "DegradationError",
    "ExportError",
    "ModelFileError",
    "ParityError",
    "UnknownTapError",
    "UnsupportedOpError",
]
