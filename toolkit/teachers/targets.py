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


def _batches(source, preprocess, n):
    def gen():
        for start in range(0, n, BATCH):
            yield preprocess(source.images(np.arange(start, min(n, start + BATCH))))
    return gen


def _write_inputs(path, source, preprocess, n):
    """An .npy of the preprocessed inputs, written through the file (a full disk is an
    OSError here, where writing through a memory map would be a SIGBUS)."""
    with open(path, "wb") as f:
        for start, batch in zip(range(0, n, BATCH), _batches(source, preprocess, n)()):
            if start == 0:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (n, *batch.shape[1:])})
            f.write(np.ascontiguousarray(batch, dtype="<f4").data)


def cached_inputs(root, source, preprocess, n):
    """The student's inputs: ``source`` preprocessed, as a read-only memmap (built once)."""
    key = hashlib.sha256(f"{source.fingerprint()}|{preprocess.fingerprint()}|{n}".encode()).hexdigest()[:24]
    path = Path(root) / f"inputs-{key}.npy"
    if not path.exists():
        try:
            with atomic_path(path) as tmp:
                _write_inputs(tmp, source, preprocess, n)
        except OSError as e:  # disk full, read-only or unwritable cache folder
            raise DataError(f"{path.parent}: cannot write the student's inputs ({e.strerror or e}); "
                            f"free space there or use another cache folder") from e
    return np.load(path, mmap_mode="r")


def split_data(config, teachers, spec, cache_root, progress=True):
    """SplitData of one source (``config.data.train`` or ``.eval``) for all teachers."""
    reference = next(t for t in teachers if t.name == config.student.reference)
    ref_p = reference.config.preprocess
    source = open_source(spec, ref_p.size, ref_p.channels, config.data.on_corrupt)
    n = len(source)
    cache = TargetCache(Path(cache_root) / "targets")
    logits, taps = {}, {}
    for t in teachers:
        prep = preprocess_of(t.config)
        src = source if (prep.size, prep.channels) == (tuple(ref_p.size), ref_p.channels) else \
            open_source(spec, t.config.preprocess.size, t.config.preprocess.channels, config.data.on_corrupt)
        found = cache.get_or_build(t.runner, _batches(src, prep, n), n, src.fingerprint(),
                                   extra_key=prep.fingerprint(), progress=progress)
        for task in t.tasks:
            logits[task.name] = found.tasks[task.name]
        for block, b in enumerate(t.boundaries, start=1):
            taps[(t.name, block)] = found.taps[b.name]
    inputs = cached_inputs(Path(cache_root) / "inputs", source, preprocess_of(reference.config), n)
    labels = {}
    if source.labels() is not None:  # data.labels rules, else each task's label of its own name
        labels = eval_labels(source, config.data.labels, list(logits))
    return SplitData(inputs, logits, taps, labels)
