"""Teachers as the toolkit sees them: the runtime teacher (targets) plus its
normalised graph and block boundaries (where branches are cut).

Teachers of one architecture line up block by block: boundary ``l`` of every
structured teacher corresponds to block ``l`` of the trunk. A teacher whose graph
has no usable block structure (no rank-4 boundary, e.g. a scikit-learn model)
teaches through its outputs alone (``structured`` is False).
"""

from dataclasses import dataclass

import onnx

from runtime.errors import AmalgamError, ConfigError
from runtime.teacher import TaskSpec, Teacher, open_teacher
from toolkit.config import Config, TeacherConfig
from toolkit.data import input_shape


@dataclass
class TeacherGraph:
    name: str
    config: TeacherConfig
    graph: onnx.ModelProto  # normalised
    boundaries: list  # runtime.blocks.Boundary, in graph order
    tasks: list  # chosen TaskSpecs of this teacher, in config order
    runner: Teacher  # ONNX Runtime session for targets (all chosen tasks, boundary taps)

    @property
    def structured(self):
        return bool(self.boundaries)

    def boundary(self, block):
        """The boundary tensor after trunk block ``block`` (1-based)."""
        return self.boundaries[block - 1]

    def task(self, name):
        return next(t for t in self.tasks if t.name == name)


# Where, in a config's teacher, the part of the opening that failed is set.
FIELD = {"input": ".preprocess", "boundaries": ".boundaries", "ops": ""}


def _open(where, tc, tasks, reference):
    """The teacher of config entry ``where`` opened by runtime, with config field paths in errors."""
    shape = input_shape(tc.preprocess)
    try:
        return open_teacher(tc.onnx, tasks, {tc.input: shape} if tc.input else shape, tc.boundaries, tc.input,
                            copied="all" if reference else "branches")
    except AmalgamError as e:
        part = getattr(e, "part", None)
        if part is None:
            raise
        if part == "input":
            e = type(e)(f"the images come out as {list(shape)} (size, channels, layout); "
                        f"the model does not take that: {e}")
        raise type(e)(f"{where}{FIELD[part]} ({tc.onnx}): {e}") from e


def load_teachers(config: Config) -> list["TeacherGraph"]:
    """TeacherGraphs of the teachers that own a chosen task, in config order."""
    chosen = {}
    for teacher_name, task in config.chosen_tasks():
        chosen.setdefault(teacher_name, []).append(TaskSpec.from_dict(task))
    out = []
    for i, tc in enumerate(config.teachers):
        if tc.name not in chosen and tc.name != config.student.reference:
            continue
        tasks = chosen.get(tc.name, [])
        all_tasks = [TaskSpec.from_dict(t.model_dump(by_alias=True)) for t in tc.tasks]
        opened = _open(f"teachers[{i}]", tc, tasks or all_tasks[:1], tc.name == config.student.reference)
        out.append(TeacherGraph(tc.name, tc, opened.graph, opened.boundaries, tasks, opened.runner))
    _check_alignment(out, config.student.reference)
    return out


def _check_alignment(teachers, reference):
    ref = next(t for t in teachers if t.name == reference)
    if not ref.structured:
        raise ConfigError(f"student.reference: teacher {reference!r} has no block boundaries, "
                          f"so it cannot give the trunk; name boundaries under teachers[].boundaries "
                          f"or pick a CNN teacher")
    for t in teachers:
        if t.structured and len(t.boundaries) != len(ref.boundaries):
            raise ConfigError(
                f"teachers.{t.name}.boundaries: {len(t.boundaries)} block boundaries "
                f"({[b.name for b in t.boundaries]}), but the reference teacher {reference!r} has "
                f"{len(ref.boundaries)}; teachers line up block by block: name the same number of boundaries"
            )
