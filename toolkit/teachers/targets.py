"""What the student learns from, as arrays on disk: its inputs and the teachers' targets.

One ONNX Runtime pass per teacher over a dataset fills the target cache
(runtime.cache: task logits and boundary taps, memory-mapped). The student's
inputs are the images preprocessed as the reference teacher wants them, cached
the same way. Everything here is keyed by content, so a second run, or the KD
baseline, reuses it.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.cache import TargetCache
from runtime.errors import DataError
from runtime.files import atomic_path
from toolkit.data import Preprocess, eval_labels, open_source

BATCH = 256


@dataclass
class SplitData:
    """One split: ``inputs`` (n, ...) for the student, teacher ``logits[task]`` and
    ``taps[(teacher, block)]``, and ground-truth ``labels[task]`` where known."""

    inputs: np.ndarray
    logits: dict
    taps: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.inputs)


def preprocess_of(teacher_config):
    """The teacher's preprocessing, every field of ``teachers[i].preprocess`` (resize included)."""
    return Preprocess.from_config(teacher_config.preprocess)


def _reader(source, preprocess):
    """``read(start, stop)``: rows ``[start, stop)`` of ``source``, preprocessed."""
    return lambda start, stop: preprocess(source.images(np.arange(start, stop)))


def _write_inputs(path, source, preprocess, n):
    """An .npy of the preprocessed inputs, written through the file (a full disk is an
    OSError here, where writing through a memory map would be a SIGBUS)."""
    with open(path, "wb") as f:
        read = _reader(source, preprocess)
        for start in range(0, n, BATCH):
            batch = read(start, min(n, start + BATCH))
            if start == 0:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (n, *batch.shape[1:])})
            f.write(np.ascontiguousarray(batch, dtype="<f4").data)


def _build_inputs(path, source, preprocess, n):
    """Write the student's inputs to ``path`` unless they are there."""
    if not path.exists():
        try:
            with atomic_path(path) as tmp:
                _write_inputs(tmp, source, preprocess, n)
        except OSError as e:  # disk full, read-only or unwritable cache folder
            raise DataError(f"{path.parent}: cannot write the student's inputs ({e.strerror or e}); "
                            f"free space there or use another cache folder") from e


def cached_inputs(root, source, preprocess, n, ranks=None):
    """The student's inputs: ``source`` preprocessed, as a read-only memmap (built once,
    by rank 0 in a job; the other ranks wait for it)."""
    key = hashlib.sha256(f"{source.fingerprint()}|{preprocess.fingerprint()}|{n}".encode()).hexdigest()[:24]
    path = Path(root) / f"inputs-{key}.npy"
    if ranks is None:
        _build_inputs(path, source, preprocess, n)
    else:
        ranks.on_main(_build_inputs, path, source, preprocess, n)
    return np.load(path, mmap_mode="r")


def split_data(config, teachers, spec, cache_root, progress=True, ranks=None, tap_rows="all"):
    """SplitData of one source (``config.data.train`` or ``.eval``) for all teachers.

    ``tap_rows``: which rows' block features (taps) the run uses and the cache keeps:
    ``"all"`` (the feature hint trains on every row), None (none: an evaluation split),
    or sorted row indices, or a function of the split's size giving them (the
    adapter-fit sample alone; ``taps`` then read those rows only, through
    :class:`SampledRows`). Task logits are always kept for every row.

    ``ranks`` (a ``toolkit.dist.Ranks``, or None alone): in a job, each rank computes its
    share of the target chunks and rank 0 writes the student's inputs."""
    reference = next(t for t in teachers if t.name == config.student.reference)
    ref_p = reference.config.preprocess
    source = open_source(spec, ref_p.size, ref_p.channels, config.data.on_corrupt)
    n = len(source)
    cache = TargetCache(Path(cache_root) / "targets")
    job = {} if ranks is None else {"rank": ranks.rank, "world": ranks.world, "barrier": ranks.barrier}
    every = isinstance(tap_rows, str) and tap_rows == "all"
    tap_rows = tap_rows(n) if callable(tap_rows) else tap_rows
    logits, taps = {}, {}
    for t in teachers:
        prep = preprocess_of(t.config)
        src = source if (prep.size, prep.channels) == (tuple(ref_p.size), ref_p.channels) else \
            open_source(spec, t.config.preprocess.size, t.config.preprocess.channels, config.data.on_corrupt)
        common = dict(extra_key=prep.fingerprint(), progress=progress, batch=BATCH, tap_dtype=config.data.tap_dtype,
                      **job)
        found = cache.get_or_build(t.runner, _reader(src, prep), n, src.fingerprint(), keep_taps=every, **common)
        for task in t.tasks:
            logits[task.name] = found.tasks[task.name]
        if every:
            taps.update({(t.name, block): found.taps[b.name] for block, b in enumerate(t.boundaries, start=1)})
        elif tap_rows is not None and t.boundaries:
            rows = np.asarray(tap_rows, dtype=np.int64)
            sample = cache.get_or_build(t.runner, _sample_reader(src, prep, rows), len(rows),
                                        f"{src.fingerprint()}|rows:{hashlib.sha256(rows.tobytes()).hexdigest()}",
                                        **common)
            taps.update({(t.name, block): SampledRows(sample.taps[b.name], rows)
                         for block, b in enumerate(t.boundaries, start=1)})
    inputs = cached_inputs(Path(cache_root) / "inputs", source, preprocess_of(reference.config), n, ranks)
    labels = {}
    if source.labels() is not None:  # data.labels rules, else each task's label of its own name
        labels = eval_labels(source, config.data.labels, list(logits))
    return SplitData(inputs, logits, taps, labels)


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
            raise DataError(f"block features of rows {missing} are not cached: only the adapter-fit sample's "
                            f"({len(self.rows)} rows) are kept when training.hint_weight is 0 "
                            f"and no feature baseline is on")
        return self.values[at]
