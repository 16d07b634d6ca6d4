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

The code lives in three subpackages: ``amalgam.runtime`` (the ONNX Runtime side),
``amalgam.exporters`` (into and out of ONNX) and ``amalgam.toolkit`` (learning,
shipping, the CLI). In a source checkout their folders sit at the top of the
repository (``runtime/``, ``exporters/``, ``toolkit/``); pyproject.toml maps them into
this package, for a wheel and for an editable install alike.
"""

from amalgam import errors
from amalgam.api import amalgamate, export, inspect, run, validate


def main(argv=None):
    """The ``amalgam`` command."""
    from amalgam.toolkit.cli import main as cli_main

    cli_main(argv)


__all__ = ["amalgamate", "errors", "export", "inspect", "main", "run", "validate"]
