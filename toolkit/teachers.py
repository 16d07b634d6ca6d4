"""Teachers as the toolkit sees them: the runtime teacher (targets) plus its
normalised graph and block boundaries (where branches are cut).

Teachers of one architecture line up block by block: boundary ``l`` of every
structured teacher corresponds to block ``l`` of the trunk. A teacher whose graph
has no usable block structure (no rank-4 boundary, e.g. a scikit-learn model)
teaches through its outputs alone (``structured`` is False).
"""

from dataclasses import dataclass

from runtime.blocks import check_boundary, describe, find_boundaries
from runtime.errors import ConfigError
from runtime.model_io import load_model
from runtime.normalize import normalize
from runtime.teacher import TaskSpec, Teacher


@dataclass
class TeacherGraph:
    name: str
    config: object  # TeacherConfig
    graph: object  # normalised onnx.ModelProto
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


def input_shape(preprocess):
    h, w = preprocess.size
    c = preprocess.channels
    return [1, h, w, c] if preprocess.layout == "NHWC" else [1, c, h, w]


def _boundaries(tc, graph):
    """The config's boundaries (checked to be on the main path), or the ones found."""
    if tc.boundaries is None:
        return find_boundaries(graph)
    for name in tc.boundaries:
        check_boundary(graph, name)
    return describe(graph, tc.boundaries)


def load_teachers(config, device="cpu"):
    """TeacherGraphs of the teachers that own a chosen task, in config order."""
    chosen = {}
    for teacher_name, task in config.chosen_tasks():
        chosen.setdefault(teacher_name, []).append(TaskSpec.from_dict(task))
    out = []
    for tc in config.teachers:
        if tc.name not in chosen and tc.name != config.student.reference:
            continue
        graph = normalize(load_model(tc.onnx), {tc.input: input_shape(tc.preprocess)} if tc.input else input_shape(tc.preprocess))
        boundaries = _boundaries(tc, graph)
        tasks = chosen.get(tc.name, [])
        all_tasks = [TaskSpec.from_dict(t.model_dump(by_alias=True)) for t in tc.tasks]
        runner = Teacher(tc.onnx, tasks or all_tasks[:1], [b.name for b in boundaries], tc.input, device="cpu")
        out.append(TeacherGraph(tc.name, tc, graph, boundaries, tasks, runner))
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
