"""Doctests run over runtime/, exporters/ and toolkit/ in `make test` (--doctest-modules).
A framework's exporter is collected only where its framework is installed, and
``python -m toolkit.cli``'s entry module is not imported (it runs the CLI)."""

import importlib.util

FRAMEWORK_EXPORTERS = {"exporters/keras_export.py": "keras", "exporters/jax_export.py": "jax",
                       "exporters/sklearn_export.py": "sklearn"}

collect_ignore = ["toolkit/cli/__main__.py"] + [
    path for path, package in FRAMEWORK_EXPORTERS.items() if importlib.util.find_spec(package) is None]
