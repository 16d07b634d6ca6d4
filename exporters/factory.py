"""A teacher built by the user's code: ``PKG.MODULE:FACTORY`` names a function that
returns the model (torch, jax). Imports only the user's module, no framework."""

import importlib
import os
import sys

from amalgam.runtime.errors import BadInputError, first_line


def load_factory(spec):
    """The callable named by ``PKG.MODULE:FACTORY`` (the current folder is importable)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(f"{spec!r}: expected PKG.MODULE:FACTORY, e.g. mypkg.models:make_teacher")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BadInputError(f"{spec}: cannot import module {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise BadInputError(f"{spec}: module {module_name!r} has no callable {attr!r}")
    return factory


def build(spec, kwargs):
    """Call the factory named by ``spec`` with ``kwargs``; its failure is bad input, in one line."""
    factory = load_factory(spec)
    try:
        return factory(**kwargs)
    except Exception as e:
        raise BadInputError(
            f"{spec}: the factory failed with {kwargs or 'no arguments'}: {type(e).__name__}: {first_line(e)}"
        ) from e
