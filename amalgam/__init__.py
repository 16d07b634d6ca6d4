"""amalgam: knowledge amalgamation over ONNX, as a Python API.

Several teachers (ONNX files with declared tasks) in, one compact student out,
exported to ONNX and validated::

    import amalgam
    found = amalgam.inspect("teacher.onnx")           # inputs, outputs, candidate blocks
    done = amalgam.amalgamate("config.yaml", out="runs/fm")
    student = amalgam.export("runs/fm", "runs/fm/student.onnx")
    checked = amalgam.validate(student.student, run="runs/fm")
    shipped = amalgam.run("config.yaml", out="runs/fm")  # all of it, as `amalgam run`

Each call returns a dataclass and raises the typed errors of :mod:`amalgam.errors`:
``BadInputError`` and its kinds (``exit_code`` 2), ``CheckFailed`` (``ParityError``,
``DegradationError``: ``exit_code`` 1), as the CLI's exit codes.

The code lives in three packages, installed inside this one (``site-packages/amalgam/``):
``runtime`` (the ONNX Runtime side), ``exporters`` (into and out of ONNX) and
``toolkit`` (learning, shipping, the CLI). They import one another by those names;
importing ``amalgam`` lets them be found where they are installed. In a source
checkout they are found on ``sys.path`` as they are.
"""

import importlib.abc
import importlib.util
import sys

PACKAGES = ("runtime", "exporters", "toolkit")


class _InstalledInside(importlib.abc.MetaPathFinder):
    """Finds ``runtime``, ``exporters`` and ``toolkit`` inside this package, after every
    other finder (a source checkout's folders win)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in PACKAGES:
            return None
        inner = importlib.util.find_spec(f"{__name__}.{fullname}")
        if inner is None or inner.origin is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, inner.origin, submodule_search_locations=list(inner.submodule_search_locations))


if not any(isinstance(f, _InstalledInside) for f in sys.meta_path):
    sys.meta_path.append(_InstalledInside())

from amalgam import errors  # noqa: E402
from amalgam.api import amalgamate, export, inspect, run, validate  # noqa: E402


def main(argv=None):
    """The ``amalgam`` command."""
    from toolkit.cli import main as cli_main

    cli_main(argv)


__all__ = ["amalgamate", "errors", "export", "inspect", "main", "run", "validate"]
