"""Teachers as the toolkit sees them: the runtime teacher (targets) plus its
normalised graph and block boundaries (where branches are cut).

Teachers of one architecture line up block by block: boundary ``l`` of every
structured teacher corresponds to block ``l`` of the trunk. A teacher whose graph
has no usable block structure (no rank-4 boundary, e.g. a scikit-learn model)
teaches through its outputs alone (``structured`` is False).
"""

from dataclasses import dataclass

import onnx

from runtime.blocks import check_boundary, describe, find_boundaries
from runtime.convert import unsupported_ops
from runtime.cut import cut_branch
from runtime.errors import BadInputError, ConfigError, UnsupportedOpError
from runtime.model_io import load_model
from runtime.normalize import normalize
from runtime.teacher import TaskSpec, Teacher
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


def _boundaries(tc, graph):
    """The config's boundaries (checked to be on the main path), or the ones found."""
    if tc.boundaries is None:
        return find_boundaries(graph)
    for name in tc.boundaries:
        check_boundary(graph, name)
    return describe(graph, tc.boundaries)


def _graph(where, tc):
    """The teacher's graph normalised for the input its preprocessing gives."""
    shape = input_shape(tc.preprocess)
    model = load_model(tc.onnx)
    try:
        return normalize(model, {tc.input: shape} if tc.input else shape)
    except BadInputError as e:
        raise type(e)(f"{where}.preprocess ({tc.onnx}): the images come out as {list(shape)} (size, channels, layout); "
                      f"the model does not take that: {e}") from e


def _check_convertible(where, graph, boundaries, whole):
    """Refuse, before the target pass, a teacher whose layers the student copies (the
    whole graph for the reference, those after block 1 for the others) hold an op no
    converter handles."""
    part = graph if whole else cut_branch(graph, boundaries[0].name, [o.name for o in graph.graph.output])
    missing = unsupported_ops(part)
    if missing:
        listed = "; ".join(f"{op} (nodes: {', '.join(names)})" for op, names in missing.items())
        raise UnsupportedOpError(f"{where}: the student copies layers with ops no converter handles: {listed}")


def load_teachers(config: Config) -> list["TeacherGraph"]:
    """TeacherGraphs of the teachers that own a chosen task, in config order."""
    chosen = {}
    for teacher_name, task in config.chosen_tasks():
        chosen.setdefault(teacher_name, []).append(TaskSpec.from_dict(task))
    out = []
    for i, tc in enumerate(config.teachers):
        if tc.name not in chosen and tc.name != config.student.reference:
            continue
        where = f"teachers[{i}]"
        graph = _graph(where, tc)
        try:
            boundaries = _boundaries(tc, graph)
        except BadInputError as e:
            raise type(e)(f"{where}.boundaries ({tc.onnx}): {e}") from e
        if boundaries:
            _check_convertible(f"{where} ({tc.onnx})", graph, boundaries, tc.name == config.student.reference)
        tasks = chosen.get(tc.name, [])
        all_tasks = [TaskSpec.from_dict(t.model_dump(by_alias=True)) for t in tc.tasks]
        runner = Teacher(tc.onnx, tasks or all_tasks[:1], [b.name for b in boundaries], tc.input)
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
