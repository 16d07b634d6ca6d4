"""Teachers as the toolkit sees them: the runtime teacher (targets) plus its
normalised graph and block boundaries (where branches are cut).

Teachers line up block by block: boundary ``l`` of every structured teacher
corresponds to block ``l`` of the trunk. A teacher whose boundaries were found (not
named in the config) is lined up with the reference teacher's by stride
(runtime.align: the last tensor at each of the reference's resolutions), so a ResNet,
a RegNet and a MobileNet amalgamate with no boundary named by hand; a ViT's encoder
layers (token sequences) line up with a CNN reference's blocks by relative depth,
their patch tokens read as a map at the patch stride; its ``alignment`` keeps the
table. Boundaries named in the config win: they pair one to
one with the reference's. A teacher whose graph has no usable block structure (no
boundary, e.g. a scikit-learn model) teaches through its outputs alone
(``structured`` is False). The reference must be a CNN: a ViT reference is refused.
"""

from dataclasses import dataclass

import onnx

from amalgam.runtime.align import align, image_size, image_size_or_none, in_order, table
from amalgam.runtime.errors import AmalgamError, BadInputError, ConfigError
from amalgam.runtime.teacher import TaskSpec, Teacher, open_teacher
from amalgam.toolkit.config import Config, TeacherConfig
from amalgam.toolkit.data import input_shape


@dataclass
class TeacherGraph:
    name: str
    config: TeacherConfig
    graph: onnx.ModelProto  # normalised
    boundaries: list  # runtime.blocks.Boundary, in graph order
    tasks: list  # chosen TaskSpecs of this teacher, in config order
    runner: Teacher  # ONNX Runtime session for targets (chosen tasks, data.one_of's others, taps)
    alignment: list | None = None  # runtime.align.Pairing per reference block; None for the reference

    @property
    def structured(self):
        return bool(self.boundaries)

    def boundary(self, block):
        """The boundary tensor after trunk block ``block`` (1-based)."""
        return self.boundaries[block - 1]

    def task(self, name):
        return next(t for t in self.tasks if t.name == name)


# Where, in a config's teacher, the part of the opening that failed is set.
FIELD = {"input": ".preprocess", "boundaries": ".boundaries", "ops": "", "trunk": " (student.reference)"}


def _open(where, tc, tasks, reference, line_up=None, **session):
    """The teacher of config entry ``where`` opened by runtime, with config field paths in
    errors; ``session``: its runner's ``device`` and ``threads``."""
    shape = input_shape(tc.preprocess)
    try:
        return open_teacher(
            tc.onnx,
            tasks,
            {tc.input: shape} if tc.input else shape,
            tc.boundaries,
            tc.input,
            copied="all" if reference else "branches",
            line_up=line_up,
            **session,
        )
    except AmalgamError as e:
        part = getattr(e, "part", None)
        if part is None:
            raise
        if part == "input":
            e = type(e)(
                f"the images come out as {list(shape)} (size, channels, layout); the model does not take that: {e}"
            )
        raise type(e)(f"{where}{FIELD[part]} ({tc.onnx}): {e}") from e


def load_teachers(config: Config, device="cpu", threads=None) -> list[TeacherGraph]:
    """TeacherGraphs of the teachers that own a chosen task, in config order, each
    structured one's boundaries lined up with the reference's (one per trunk block);
    their ONNX Runtime sessions run on ``device`` with ``threads`` intra-op threads
    (None: ONNX Runtime's default)."""
    chosen = {}
    for teacher_name, task in config.chosen_tasks():
        chosen.setdefault(teacher_name, []).append(TaskSpec.from_dict(task))
    reference = config.student.reference
    entries = {tc.name: (i, tc) for i, tc in enumerate(config.teachers) if tc.name in chosen or tc.name == reference}

    grouped = {name for group in config.data.one_of for name in group}

    def tasks_of(tc):
        """The runner's tasks: the chosen ones (or the first, for a reference that owns none),
        then the unchosen ones of a ``data.one_of`` group (read for reconciling, never learned)."""
        own = chosen.get(tc.name) or [TaskSpec.from_dict(tc.tasks[0].model_dump(by_alias=True))]
        names = {t.name for t in own}
        return own + [
            TaskSpec.from_dict(k.model_dump(by_alias=True))
            for k in tc.tasks
            if k.name in grouped and k.name not in names
        ]

    i, ref_tc = entries[reference]
    session = {"device": device, "threads": threads}
    ref = _open(f"teachers[{i}]", ref_tc, tasks_of(ref_tc), True, **session)
    _check_reference(reference, ref.boundaries)
    out = []
    for name, (i, tc) in entries.items():
        if name == reference:
            out.append(TeacherGraph(name, tc, ref.graph, ref.boundaries, chosen.get(name, []), ref.runner))
            continue
        where = f"teachers[{i}] ({tc.onnx})"
        pairs = []

        def line_up(graph, found, where=where, tc=tc, pairs=pairs):
            pairs += _align(where, ref_tc, ref, tc, graph, found)
            return [p.other for p in pairs]

        opened = _open(f"teachers[{i}]", tc, tasks_of(tc), False, line_up, **session)
        out.append(
            TeacherGraph(name, tc, opened.graph, opened.boundaries, chosen.get(name, []), opened.runner, pairs or None)
        )
    return out


def _check_reference(reference, boundaries):
    if not boundaries:
        raise ConfigError(
            f"student.reference: teacher {reference!r} has no block boundaries, "
            f"so it cannot give the trunk; name boundaries under teachers[].boundaries "
            f"or pick a CNN teacher"
        )


def _align(where, ref_tc, ref, tc, graph, other):
    """``tc``'s boundaries ``other`` paired with the reference's: one to one where the
    config names them, by stride where they were found."""
    if tc.boundaries is None:
        try:
            return align(ref.boundaries, image_size(ref.graph), other, image_size(graph), (ref_tc.name, tc.name))
        except BadInputError as e:
            raise type(e)(f"{where}: {e}") from e
    if len(other) != len(ref.boundaries):
        raise ConfigError(
            f"teachers.{tc.name}.boundaries: {len(other)} block boundaries ({[b.name for b in other]}), but the "
            f"reference teacher {ref_tc.name!r} has {len(ref.boundaries)}; named boundaries pair one to one with "
            f"the reference's: name {len(ref.boundaries)}, or leave boundaries out to line them up by stride"
        )
    return in_order(ref.boundaries, image_size_or_none(ref.graph), other, image_size_or_none(graph))


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
