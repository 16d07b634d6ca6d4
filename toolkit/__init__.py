"""The learning side: config, teachers, the student (TargetNet), the method, evaluation,
shipping and the CLI, one subpackage per role (docs/design.md)."""

from amalgam.exporters.metadata import toolkit_version

__version__ = toolkit_version()  # pyproject.toml's version: resume checks it, exporters stamp it
