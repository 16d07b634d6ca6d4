"""The doctests of every module of ``amalgam`` (``amalgam.runtime``, ``amalgam.exporters``,
``amalgam.toolkit`` and the API), each imported under its one package name.

A framework's exporter is checked only where its framework is installed (its own
environment runs it there)."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import amalgam

FRAMEWORK_EXPORTERS = {
    "amalgam.exporters.keras_export": "keras",
    "amalgam.exporters.jax_export": "jax",
    "amalgam.exporters.sklearn_export": "skl2onnx",  # scikit-learn alone is in .venv too (NNCF needs it)
}


SUBPACKAGES = ("amalgam.runtime", "amalgam.exporters", "amalgam.toolkit")


def _modules():
    """Every module of the package (the folders map into it, so each subpackage is walked
    from its own path), but ``python -m amalgam``'s entry, which runs the CLI."""
    names = [m.name for m in pkgutil.iter_modules(amalgam.__path__, "amalgam.") if m.name != "amalgam.__main__"]
    for package in SUBPACKAGES:
        names += [package] + [
            m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}.")
        ]
    return ["amalgam", *names]


@pytest.mark.parametrize("name", _modules())
def test_module_doctests(name):
    framework = FRAMEWORK_EXPORTERS.get(name)
    if framework and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed here")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
