"""Teachers as the toolkit sees them: the runtime teacher (targets) plus its
normalised graph and block boundaries (where branches are cut).

Teachers line up block by block: boundary ``l`` of every structured teacher
corresponds to block ``l`` of the trunk. A teacher whose boundaries were found (not
named in the config) is lined up with the reference teacher's by stride
(runtime.align: the last tensor at each of the reference's resolutions), so a ResNet,
a RegNet and a MobileNet amalgamate with no boundary named by hand; its
``alignment`` keeps the table. Boundaries named in the config win: they pair one to
one with the reference's. A teacher whose graph has no usable block structure (no
rank-4 boundary, e.g. a scikit-learn model) teaches through its outputs alone
(``structured`` is False).
"""

from dataclasses import dataclass

import onnx

from runtime.align import align, image_size, image_size_or_none, in_order, table
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
    alignment: list | None = None  # runtime.align.Pairing per reference block; None for the reference

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
        raise type(e)(f"{where}.preprocess ({tc.onnx}): the images come out as {shape} (size, channels, layout); "
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
    """TeacherGraphs of the teachers that own a chosen task, in config order, each
    structured one's boundaries lined up with the reference's (one per trunk block)."""
    chosen = {}
    for teacher_name, task in config.chosen_tasks():
        chosen.setdefault(teacher_name, []).append(TaskSpec.from_dict(task))
    opened = [(i, tc) for i, tc in enumerate(config.teachers)
              if tc.name in chosen or tc.name == config.student.reference]
    graphs = {tc.name: _graph(f"teachers[{i}]", tc) for i, tc in opened}
    found = {tc.name: _named_or_found(f"teachers[{i}]", tc, graphs[tc.name]) for i, tc in opened}
    reference = config.student.reference
    _check_reference(reference, found[reference])
    out = []
    for i, tc in opened:
        where = f"teachers[{i}] ({tc.onnx})"
        alignment = None
        if found[tc.name] and tc.name != reference:
            alignment = _align(where, config.teacher(reference), tc, graphs, found)
        boundaries = [p.other for p in alignment] if alignment else found[tc.name]
        if boundaries:
            _check_convertible(where, graphs[tc.name], boundaries, tc.name == reference)
        tasks = chosen.get(tc.name, [])
        all_tasks = [TaskSpec.from_dict(t.model_dump(by_alias=True)) for t in tc.tasks]
        runner = Teacher(tc.onnx, tasks or all_tasks[:1], [b.name for b in boundaries], tc.input)
        out.append(TeacherGraph(tc.name, tc, graphs[tc.name], boundaries, tasks, runner, alignment))
    return out


def _named_or_found(where, tc, graph):
    try:
        return _boundaries(tc, graph)
    except BadInputError as e:
        raise type(e)(f"{where}.boundaries ({tc.onnx}): {e}") from e


def _check_reference(reference, boundaries):
    if not boundaries:
        raise ConfigError(f"student.reference: teacher {reference!r} has no block boundaries, "
                          f"so it cannot give the trunk; name boundaries under teachers[].boundaries "
                          f"or pick a CNN teacher")


def _align(where, ref_tc, tc, graphs, found):
    """``tc``'s boundaries paired with the reference's: one to one where the config
    names them, by stride where they were found."""
    ref, other = found[ref_tc.name], found[tc.name]
    if tc.boundaries is None:
        try:
            sizes = image_size(graphs[ref_tc.name]), image_size(graphs[tc.name])
            return align(ref, sizes[0], other, sizes[1], (ref_tc.name, tc.name))
        except BadInputError as e:
            raise type(e)(f"{where}: {e}") from e
    if len(other) != len(ref):
        raise ConfigError(
            f"teachers.{tc.name}.boundaries: {len(other)} block boundaries ({[b.name for b in other]}), but the "
            f"reference teacher {ref_tc.name!r} has {len(ref)}; named boundaries pair one to one with the "
            f"reference's: name {len(ref)}, or leave boundaries out to line them up by stride")
    return in_order(ref, image_size_or_none(graphs[ref_tc.name]), other, image_size_or_none(graphs[tc.name]))


def alignment_tables(teachers):
    """``{teacher: [row dict per reference block]}`` for every teacher lined up with the reference."""
    return {t.name: [p.to_dict() for p in t.alignment] for t in teachers if t.alignment}


def alignment_lines(teachers, reference):
    """The alignment tables as text: a title line per teacher, then its rows."""
    lines = []
    for t in teachers:
        if t.alignment:
            lines.append(f"{t.name}'s boundaries lined up with {reference}'s blocks:")
            lines += table(t.alignment, (reference, t.name))
    return lines
