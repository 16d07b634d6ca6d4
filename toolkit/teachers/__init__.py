"""The teachers of a run: their graphs opened through ``runtime/`` with boundaries
resolved and checked (``graphs``), and the target splits their outputs and taps give
on the training data (``targets``)."""

from amalgam.toolkit.teachers.graphs import TeacherGraph, alignment_lines, alignment_tables, load_teachers
from amalgam.toolkit.teachers.targets import SplitData, split_data

__all__ = ["SplitData", "TeacherGraph", "alignment_lines", "alignment_tables", "load_teachers", "split_data"]
