"""What the student learns from, as arrays on disk: its inputs and the teachers' targets.

One ONNX Runtime pass per teacher over a dataset fills the target cache
(runtime.cache: task logits and boundary taps, memory-mapped). The student's
inputs are the images preprocessed as the reference teacher wants them, cached
the same way. Everything here is keyed by content, so a second run, or the KD
baseline, reuses it.

With ``training.teacher_views``, each view's task logits are one more cached pass per
teacher (the view's name in the cache key), and the training split's ``logits`` are
averaged over the views each teacher agrees with itself on (toolkit.teachers.averaged),
written once to an .npy named after the averaged passes' cache keys and memory-mapped;
its ``plain_logits`` keep the plain view's, for evaluation. Taps stay the plain view's.

With ``data.one_of``, the training split's ``logits`` of each group's chosen tasks are
then reconciled over the group (toolkit.teachers.one_of), the group's unchosen tasks
read from the same teacher passes (averaged over the same kept views); ``own_logits``
keep each teacher's own targets.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amalgam.runtime.cache import TargetCache
from amalgam.runtime.errors import DataError
from amalgam.runtime.files import atomic_path
from amalgam.toolkit.data import Preprocess, eval_labels, open_source, split_holdout
from amalgam.toolkit.data.views import parse_view
from amalgam.toolkit.teachers.averaged import average, kept_views
from amalgam.toolkit.teachers.one_of import held_out_record, reconcile, settle_rule

BATCH = 256
AVERAGE_ROWS = 8192  # rows averaged at a time


@dataclass
class SplitData:
    """One split: ``inputs`` (n, ...) for the student, teacher ``logits[task]`` (the
    targets: averaged over the kept views where views are on) and ``taps[(teacher, block)]``,
    ground-truth ``labels[task]`` where known, the plain view's ``plain_logits[task]``
    (what evaluation compares with; ``logits`` when there are no views), ``views``
    (``{teacher: {view: {"agreement", "kappa", "kept"}}}``), each teacher's own targets
    ``own_logits[task]`` (``logits`` before ``data.one_of`` reconciles them) and ``one_of``
    (a held-out record per reconciled group, toolkit.teachers.one_of.held_out_record)."""

    inputs: np.ndarray
    logits: dict
    taps: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    plain_logits: dict | None = None
    views: dict = field(default_factory=dict)
    own_logits: dict | None = None
    one_of: list = field(default_factory=list)

    def __post_init__(self):
        if self.plain_logits is None:
            self.plain_logits = self.logits
        if self.own_logits is None:
            self.own_logits = self.logits

    def __len__(self):
        return len(self.inputs)


def preprocess_of(teacher_config):
    """The teacher's preprocessing, every field of ``teachers[i].preprocess`` (resize included)."""
    return Preprocess.from_config(teacher_config.preprocess)


def _reader(source, preprocess):
    """``read(start, stop)``: rows ``[start, stop)`` of ``source``, preprocessed."""
    return lambda start, stop: preprocess(source.images(np.arange(start, stop)))


def _view_reader(source, preprocess, view):
    """``read(start, stop)``: rows ``[start, stop)`` of ``source`` under ``view``, preprocessed."""
    return lambda start, stop: preprocess(view(source.images(np.arange(start, stop)), np.arange(start, stop)))


def _write_rows(path, read, n, step=BATCH):
    """An .npy of float32 rows ``read(start, stop)``, written through the file, ``step``
    rows at a time (a full disk is an OSError here, where writing through a memory map
    would be a SIGBUS)."""
    with open(path, "wb") as f:
        for start in range(0, n, step):
            batch = read(start, min(n, start + step))
            if start == 0:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (n, *batch.shape[1:])}
                )
            f.write(np.ascontiguousarray(batch, dtype="<f4").data)


def _build_rows(path, read, n, what, step=BATCH):
    """Write ``what`` (an .npy of ``n`` rows) to ``path`` unless it is there."""
    if not path.exists():
        try:
            with atomic_path(path) as tmp:
                _write_rows(tmp, read, n, step)
        except OSError as e:  # disk full, read-only or unwritable cache folder
            raise DataError(
                f"{path.parent}: cannot write {what} ({e.strerror or e}); free space there or use another cache folder"
            ) from e


def _on_main(ranks, fn, *args):
    return fn(*args) if ranks is None else ranks.on_main(fn, *args)


def cached_inputs(root, source, preprocess, n, ranks=None):
    """The student's inputs: ``source`` preprocessed, as a read-only memmap (built once,
    by rank 0 in a job; the other ranks wait for it)."""
    key = hashlib.sha256(f"{source.fingerprint()}|{preprocess.fingerprint()}|{n}".encode()).hexdigest()[:24]
    path = Path(root) / f"inputs-{key}.npy"
    _on_main(ranks, _build_rows, path, _reader(source, preprocess), n, "the student's inputs")
    return np.load(path, mmap_mode="r")


def averaged_logits(root, tasks, passes, ranks=None):
    """``{task: logits}`` averaged over cached teacher passes (CachedTargets, the plain
    view's first), as read-only memmaps of .npy files under ``root`` named after the
    passes' cache keys, in any order (written once, by rank 0 in a job)."""
    out = {}
    for task in tasks:
        arrays = [p.tasks[task.name] for p in passes]
        key = hashlib.sha256("|".join([task.name, task.kind, *sorted(p.key for p in passes)]).encode()).hexdigest()[:24]
        path = Path(root) / f"{task.name}-{key}.npy"

        def read(start, stop, kind=task.kind, arrays=arrays):
            return average(kind, [a[start:stop] for a in arrays])

        _on_main(ranks, _build_rows, path, read, len(arrays[0]), "the averaged teacher targets", AVERAGE_ROWS)
        out[task.name] = np.load(path, mmap_mode="r")
    return out


def split_data(
    config,
    teachers,
    spec,
    cache_root,
    progress=True,
    ranks=None,
    tap_rows="all",
    views=(),
    one_of=(),
    one_of_rule="auto",
):
    """SplitData of one source (``config.data.train`` or ``.eval``) for all teachers.

    ``tap_rows``: which rows' block features (taps) the run uses and the cache keeps:
    ``"all"`` (the feature hint trains on every row), None (none: an evaluation split),
    or sorted row indices, or a function of the split's size giving them (the
    adapter-fit sample alone; ``taps`` then read those rows only, through
    :class:`SampledRows`). Task logits are always kept for every row.

    ``ranks`` (a ``toolkit.dist.Ranks``, or None alone): in a job, each rank computes its
    share of the target chunks and rank 0 writes the student's inputs.

    ``views``: view names (``training.teacher_views``, the training split alone); each
    teacher's targets are averaged over those it agrees with itself on, measured on
    the held-out rows (``data.holdout``, ``training.seed``) against ``training.view_agreement``.

    ``one_of``: groups of task names (``data.one_of``, the training split alone) whose
    chosen tasks' targets are reconciled over the group by ``one_of_rule``
    (toolkit.teachers.one_of); every task of a group is a task of a teacher's runner
    (toolkit.teachers.graphs.load_teachers adds the unchosen ones)."""
    reference = next(t for t in teachers if t.name == config.student.reference)
    ref_p = reference.config.preprocess
    source = open_source(spec, ref_p.size, ref_p.channels, config.data.on_corrupt)
    n = len(source)
    cache = TargetCache(Path(cache_root) / "targets")
    job = (
        {}
        if ranks is None
        else {"rank": ranks.rank, "world": ranks.world, "barrier": ranks.barrier, "broadcast": ranks.broadcast}
    )
    every = isinstance(tap_rows, str) and tap_rows == "all"
    tap_rows = tap_rows(n) if callable(tap_rows) else tap_rows
    logits, taps, plain, record, others = {}, {}, {}, {}, {}
    holdout = split_holdout(n, config.data.holdout, config.training.seed)[1]
    for t in teachers:
        prep = preprocess_of(t.config)
        src = (
            source
            if (prep.size, prep.channels) == (tuple(ref_p.size), ref_p.channels)
            else open_source(spec, t.config.preprocess.size, t.config.preprocess.channels, config.data.on_corrupt)
        )
        common = dict(
            extra_key=prep.fingerprint(), progress=progress, batch=BATCH, tap_dtype=config.data.tap_dtype, **job
        )
        found = cache.get_or_build(t.runner, _reader(src, prep), n, src.fingerprint(), keep_taps=every, **common)
        plain.update({task.name: found.tasks[task.name] for task in t.tasks})
        kept = []
        if views and t.tasks and len(holdout):
            viewed = {
                view.name: _view_targets(cache, t, src, prep, view, n, common)
                for view in map(parse_view, dict.fromkeys(views))
            }
            kept, record[t.name] = kept_views(
                t.tasks, found.tasks, {k: v.tasks for k, v in viewed.items()}, holdout, config.training.view_agreement
            )
            kept = [viewed[name] for name in kept]
        # every task the runner reads (the chosen ones, and data.one_of's others) over the same kept views
        read = (
            averaged_logits(Path(cache_root) / "averaged", t.runner.tasks, [found, *kept], ranks)
            if kept
            else found.tasks
        )
        logits.update({task.name: read[task.name] for task in t.tasks})
        others.update({name: z for name, z in read.items() if name not in plain})
        if every:
            taps.update({(t.name, block): found.taps[b.name] for block, b in enumerate(t.boundaries, start=1)})
        elif tap_rows is not None and t.boundaries:
            rows = np.asarray(tap_rows, dtype=np.int64)
            sample = cache.get_or_build(
                t.runner,
                _sample_reader(src, prep, rows),
                len(rows),
                f"{src.fingerprint()}|rows:{hashlib.sha256(rows.tobytes()).hexdigest()}",
                **common,
            )
            taps.update(
                {
                    (t.name, block): SampledRows(sample.taps[b.name], rows)
                    for block, b in enumerate(t.boundaries, start=1)
                }
            )
    inputs = cached_inputs(Path(cache_root) / "inputs", source, preprocess_of(reference.config), n, ranks)
    labels = {}
    if source.labels() is not None:  # data.labels rules, else each task's label of its own name
        labels = eval_labels(source, config.data.labels, list(logits))
    own, records, grouped = logits, [], {**others, **logits}
    for group in one_of:
        rule, fires = settle_rule(one_of_rule, group, grouped, holdout if len(holdout) else np.arange(n))
        fixed = reconcile(group, grouped, [task for task in group if task in own], rule)
        records.append(held_out_record(group, grouped, fixed, holdout, rule, fires))
        logits = {**logits, **fixed}
    return SplitData(inputs, logits, taps, labels, plain, record, own, records)


def _view_targets(cache, teacher, source, preprocess, view, n, common):
    """``teacher``'s cached targets of ``source`` under ``view`` (its name in the cache key; task logits only)."""
    common = {**common, "extra_key": f"{common['extra_key']}|view:{view.fingerprint()}"}
    return cache.get_or_build(
        teacher.runner, _view_reader(source, preprocess, view), n, source.fingerprint(), keep_taps=False, **common
    )


def _sample_reader(source, preprocess, rows):
    """``read(start, stop)`` over the sample: rows ``rows[start:stop]`` of ``source``, preprocessed."""
    return lambda start, stop: preprocess(source.images(rows[start:stop]))


class SampledRows:
    """Cached taps of some rows of a split, indexed by the split's row numbers."""

    def __init__(self, values, rows):
        self.values, self.rows = values, np.asarray(rows)
        self.shape = (None, *values.shape[1:])

    def __getitem__(self, idx):
        idx = np.asarray(idx)
        at = np.clip(np.searchsorted(self.rows, idx), 0, len(self.rows) - 1)
        if not np.array_equal(self.rows[at], idx):
            missing = idx[self.rows[at] != idx][:5].tolist()
            raise DataError(
                f"block features of rows {missing} are not cached: only the adapter-fit sample's "
                f"({len(self.rows)} rows) are kept when training.hint_weight is 0 "
                f"and no feature baseline is on"
            )
        return self.values[at]
