"""Teachers: frozen ONNX models with declared tasks, run by ONNX Runtime.

Paper terms -> code:

* a teacher (a pre-trained multi-task network, frozen) -> :class:`Teacher`, an ONNX
  file run under ONNX Runtime with ``opt_level="full"`` (it only produces targets);
* one of its tasks (a binary attribute of a multi-label head, or a multi-class
  prediction) -> :class:`TaskSpec`, which names the graph output and the logits in it;
* the teacher's features at a block boundary (the layer-wise targets) -> taps, extra
  graph outputs added with :func:`~amalgam.runtime.taps.add_taps`.

``Teacher.run(batch)`` gives the chosen tasks' logits and the taps:
binary tasks come back as ``(N,)`` logits, multi-class tasks as ``(N, k)``.
"""

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from amalgam.runtime.errors import BadInputError, ConfigError, UnknownTapError
from amalgam.runtime.graph import dims
from amalgam.runtime.model_io import file_sha256, load_model
from amalgam.runtime.rules import task_problems
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import add_taps, infer_shapes, tensor_names

SPEC_KEYS = ("name", "output", "index", "slice", "kind", "labels")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a teacher: where its logits are in which graph output.

    * binary: one logit; ``index`` picks it from a multi-label output, or the output is
      one wide. ``labels``, if given, are ``[negative, positive]``.
    * multiclass: ``slice=(start, stop)`` picks ``stop - start >= 2`` logits, or the
      whole output when ``slice`` is None. ``labels``, if given, name each class.

    The width of the output is checked against the teacher's graph by :class:`Teacher`.
    """

    name: str
    output: str
    index: int | None = None
    slice: tuple[int, int] | None = None
    kind: str = "binary"
    labels: tuple[str, ...] | None = field(default=None)

    def __post_init__(self):
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"task name {self.name!r}: expected a non-empty string")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError(f"{where}: 'output' must name a graph output, got {self.output!r}")
        if self.index is not None and (
            isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0
        ):
            raise ConfigError(f"{where}: index {self.index!r}: expected an integer >= 0")
        if self.slice is not None:
            self._check_slice(where)
        if self.labels is not None:
            self._check_labels(where)
        problems = task_problems(self.kind, self.index, self.slice, self.labels)
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(f"{key}: {msg}" for key, msg in problems))

    def _check_slice(self, where):
        s = self.slice
        ok = (
            isinstance(s, (tuple, list))
            and len(s) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in s)
        )
        if not ok or s[0] < 0 or s[1] <= s[0]:
            raise ConfigError(f"{where}: slice {s!r}: expected [start, stop] with 0 <= start < stop")
        object.__setattr__(self, "slice", (s[0], s[1]))

    def _check_labels(self, where):
        labels = self.labels
        if isinstance(labels, str) or not all(isinstance(v, str) for v in labels):
            raise ConfigError(f"{where}: labels must be a list of strings, got {labels!r}")
        object.__setattr__(self, "labels", tuple(labels))

    @property
    def width(self):
        """Number of logits the task reads (None: the whole output, known from the graph)."""
        if self.kind == "binary":
            return 1
        return None if self.slice is None else self.slice[1] - self.slice[0]

    @classmethod
    def from_dict(cls, d):
        """A TaskSpec from its config / metadata dict (see docs/design.md, 'Task spec')."""
        if not isinstance(d, dict):
            raise ConfigError(f"task spec {d!r}: expected a mapping with keys {SPEC_KEYS}")
        name = d.get("name", "<unnamed>")
        unknown = sorted(set(d) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"task {name!r}: unknown keys {unknown}; expected some of {SPEC_KEYS}")
        missing = [k for k in ("name", "output") if k not in d]
        if missing:
            raise ConfigError(f"task {name!r}: missing {missing}")
        return cls(**{k: d[k] for k in SPEC_KEYS if d.get(k) is not None})

    def to_dict(self):
        """The plain JSON-able dict (all keys present; absent values are None)."""
        return {
            "name": self.name,
            "output": self.output,
            "index": self.index,
            "slice": list(self.slice) if self.slice else None,
            "kind": self.kind,
            "labels": list(self.labels) if self.labels else None,
        }

    def logits(self, output):
        """This task's logits from a ``(N, width)`` output: ``(N,)`` binary, ``(N, k)`` multiclass."""
        if self.kind == "binary":
            return output[:, self.index or 0]
        return output if self.slice is None else output[:, self.slice[0] : self.slice[1]]


class TeacherOutputs(NamedTuple):
    """What one batch gives: ``tasks[name]`` logits and ``taps[tensor name]`` features."""

    tasks: dict
    taps: dict


def _width(dims):
    """Logits per sample of an output ``(N, ...)``; None when a non-batch dim is unknown."""
    if dims is None or any(d is None for d in dims[1:]):
        return None
    return int(np.prod(dims[1:])) if len(dims) > 1 else 1


class Teacher:
    """A frozen ONNX teacher with declared tasks and block-boundary taps.

    ``boundaries`` are tensor names in the graph; their values come back from
    :meth:`run` as taps. Every task's output must be a graph output (or tensor) and
    its ``index`` / ``slice`` must fit that output's width.
    """

    def __init__(self, path, tasks, boundaries=(), input_name=None, device="cpu", threads=None):
        self.path = Path(path)
        self.tasks = [t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in tasks]
        self.boundaries = list(dict.fromkeys(boundaries))
        model = load_model(self.path)
        self.input_name, self.input_shape, self._input_dtype = self._pick_input(model, input_name)
        self._check_task_names()
        self._widths = self._output_widths(model)
        for task in self.tasks:
            self._check_width(task, self._widths[task.output])
        self._fetch = list(dict.fromkeys([t.output for t in self.tasks] + self.boundaries))
        try:
            tapped = add_taps(model, self._fetch)
        except UnknownTapError as e:
            raise UnknownTapError(f"{self.path}: {e}") from e
        self.session = make_session(tapped, device=device, threads=threads, opt_level="full")

    @property
    def name(self):
        return self.path.stem

    def output_width(self, output):
        """Logits per sample of a task output (None where the graph leaves it open)."""
        return self._widths[output]

    @functools.cached_property
    def sha256(self):
        """Hex sha256 of the ONNX file (the teacher's identity in the target cache)."""
        return file_sha256(self.path)

    def _pick_input(self, model, input_name):
        inits = {i.name for i in model.graph.initializer}
        inputs = {i.name: i for i in model.graph.input if i.name not in inits}
        if input_name is None and len(inputs) != 1:
            raise ConfigError(
                f"{self.path}: the teacher has inputs {list(inputs)}; say which one takes the images with input_name"
            )
        name = input_name or next(iter(inputs))
        if name not in inputs:
            raise ConfigError(f"{self.path}: no graph input {name!r}; inputs are {list(inputs)}")
        vi = inputs[name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        return name, dims(vi), dtype

    def _check_task_names(self):
        if not self.tasks:
            raise ConfigError(f"{self.path}: a teacher needs at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.path}: task names {dupes} are declared more than once")

    def _output_widths(self, model):
        inferred = infer_shapes(model)
        known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
        tensors = set(tensor_names(model))
        widths = {}
        for task in self.tasks:
            if task.output not in tensors:
                raise ConfigError(
                    f"{self.path}: task {task.name!r} reads output {task.output!r}, "
                    f"which the graph does not have; outputs are "
                    f"{[o.name for o in model.graph.output]}"
                )
            widths[task.output] = _width(dims(known[task.output])) if task.output in known else None
        return widths

    def _check_width(self, task, width):
        """Raise if ``task`` does not fit an output of ``width`` logits (None: not known yet)."""
        if width is None:
            return
        where = f"{self.path}: task {task.name!r} on output {task.output!r} of width {width}"
        if task.kind == "binary" and task.index is None and width != 1:
            raise ConfigError(f"{where}: a binary task needs 'index' unless the output is 1 wide")
        if task.index is not None and task.index >= width:
            raise ConfigError(f"{where}: index {task.index} is out of range")
        if task.slice is not None and task.slice[1] > width:
            raise ConfigError(f"{where}: slice {list(task.slice)} is out of range")
        if task.kind == "multiclass" and task.slice is None and width < 2:
            raise ConfigError(f"{where}: a multiclass task needs at least 2 logits")
        if task.kind == "multiclass" and task.labels and len(task.labels) != (task.width or width):
            raise ConfigError(f"{where}: {len(task.labels)} labels for {task.width or width} logits")

    def _check_batch(self, batch):
        if not isinstance(batch, np.ndarray):
            raise BadInputError(
                f"{self.path}: input {self.input_name!r} expects a numpy array, got {type(batch).__name__}"
            )
        shape = self.input_shape
        if shape is not None and (
            batch.ndim != len(shape) or any(d is not None and d != b for d, b in zip(shape[1:], batch.shape[1:]))
        ):
            raise BadInputError(
                f"{self.path}: input {self.input_name!r} expects shape "
                f"{['N' if d is None else d for d in shape]}, got {list(batch.shape)}"
            )
        return np.ascontiguousarray(batch, dtype=self._input_dtype)

    def run(self, batch):
        """Task logits and taps for one batch ``(N, ...)`` of preprocessed inputs."""
        values = self.session.run(self._fetch, {self.input_name: self._check_batch(batch)})
        out = dict(zip(self._fetch, values))
        for name, value in out.items():
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise BadInputError(f"{self.path}: output {name!r} has NaN or Inf values for this batch")
        tasks = {}
        for task in self.tasks:
            value = out[task.output]
            flat = value.reshape(value.shape[0], -1)
            self._check_width(task, flat.shape[1])
            tasks[task.name] = task.logits(flat)
        return TeacherOutputs(tasks, {name: out[name] for name in self.boundaries})

    def __repr__(self):
        return f"Teacher({str(self.path)!r}, tasks={[t.name for t in self.tasks]}, boundaries={self.boundaries})"


@dataclass
class OpenedTeacher:
    """A teacher opened by :func:`open_teacher`."""

    graph: onnx.ModelProto  # normalised for the input shape
    boundaries: list  # runtime.blocks.Boundary, in graph order
    runner: Teacher  # ONNX Runtime session for the tasks' logits and the boundary taps


def _part(part, error):
    """``error`` marked with the part of the opening that failed (callers add context)."""
    error.part = part
    return error


def open_teacher(
    path,
    tasks,
    input_shape,
    boundaries=None,
    input_name=None,
    copied="branches",
    line_up=None,
    device="cpu",
    threads=None,
):
    """Open one teacher in one call: load and check the file, normalise its graph for
    ``input_shape`` (one shape, or ``{input: shape}``), find its block boundaries or
    check the given ones, check that the layers a student copies convert to torch
    (``copied``: ``"all"`` for the trunk's reference teacher, ``"branches"`` for those
    after the first boundary, None for none), and build its :class:`Teacher` runner
    with the boundaries as taps (its session on ``device`` with ``threads`` intra-op
    threads, None: ONNX Runtime's default). A ViT's ``tokens`` boundaries count where
    the graph tells their patch grid (runtime.tokens; found ones whose grid it does not
    tell are left out, and the teacher may teach through its outputs; named ones are
    refused), but not for the reference: the trunk is cut from feature maps only
    (runtime.align.require_maps). ``line_up(graph, boundaries) -> boundaries``, when
    given, replaces the found or named boundaries before the check and the runner (the
    toolkit lines a teacher up with the reference's blocks, runtime.align). A failure's
    ``part`` attribute says what was wrong: ``"input"``, ``"boundaries"``, ``"trunk"``
    (a reference whose boundaries are token sequences) or ``"ops"`` (None: the file or
    the tasks)."""
    from amalgam.runtime.align import require_maps
    from amalgam.runtime.blocks import check_boundary, describe, find_boundaries
    from amalgam.runtime.normalize import normalize
    from amalgam.runtime.tokens import readable, require_grid

    model = load_model(path)
    try:
        graph = normalize(model, input_shape)
    except BadInputError as e:
        raise _part("input", e) from e
    try:
        if boundaries is None:
            found = [b for b in find_boundaries(graph) if readable(b)]
        else:
            for name in boundaries:
                check_boundary(graph, name)
            found = describe(graph, boundaries)
            require_grid(found, str(path))
    except BadInputError as e:
        raise _part("boundaries", e) from e
    if copied == "all":
        try:
            require_maps(found, str(path))
        except BadInputError as e:
            raise _part("trunk", e) from e
    if found and line_up is not None:
        found = line_up(graph, found)
    if found and copied:
        _check_convertible(graph, found, copied == "all")
    return OpenedTeacher(graph, found, Teacher(path, tasks, [b.name for b in found], input_name, device, threads))


def _check_convertible(graph, boundaries, whole):
    """Refuse, before any target pass, a teacher whose copied layers hold an op no converter handles."""
    from amalgam.runtime.convert import unsupported_ops
    from amalgam.runtime.cut import cut_branch
    from amalgam.runtime.errors import UnsupportedOpError

    part = graph if whole else cut_branch(graph, boundaries[0].name, [o.name for o in graph.graph.output])
    missing = unsupported_ops(part)
    if missing:
        listed = "; ".join(f"{op} (nodes: {', '.join(names)})" for op, names in missing.items())
        raise _part("ops", UnsupportedOpError(f"the student copies layers with ops no converter handles: {listed}"))
