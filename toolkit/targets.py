"""What the student learns from, as arrays on disk: its inputs and the teachers' targets.

One ONNX Runtime pass per teacher over a dataset fills the target cache
(runtime.cache: task logits and boundary taps, memory-mapped). The student's
inputs are the images preprocessed as the reference teacher wants them, cached
the same way. Everything here is keyed by content, so a second run, or the KD
baseline, reuses it.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.cache import TargetCache
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
    p = teacher_config.preprocess
    return Preprocess(p.size, p.channels, p.mean, p.std, p.layout)


def _batches(source, preprocess, n):
    def gen():
        for start in range(0, n, BATCH):
            yield preprocess(source.images(np.arange(start, min(n, start + BATCH))))
    return gen


def cached_inputs(root, source, preprocess, n):
    """The student's inputs: ``source`` preprocessed, as a read-only memmap (built once)."""
    key = hashlib.sha256(f"{source.fingerprint()}|{preprocess.fingerprint()}|{n}".encode()).hexdigest()[:24]
    path = Path(root) / f"inputs-{key}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        out = None
        for start, batch in zip(range(0, n, BATCH), _batches(source, preprocess, n)()):
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *batch.shape[1:]))
            out[start:start + len(batch)] = batch
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def split_data(config, teachers, spec, cache_root, progress=True):
    """SplitData of one source (``config.data.train`` or ``.eval``) for all teachers."""
    reference = next(t for t in teachers if t.name == config.student.reference)
    ref_p = reference.config.preprocess
    source = open_source(spec, ref_p.size, ref_p.channels)
    n = len(source)
    cache = TargetCache(Path(cache_root) / "targets")
    logits, taps = {}, {}
    for t in teachers:
        prep = preprocess_of(t.config)
        src = source if (prep.size, prep.channels) == (tuple(ref_p.size), ref_p.channels) else \
            open_source(spec, t.config.preprocess.size, t.config.preprocess.channels)
        found = cache.get_or_build(t.runner, _batches(src, prep, n), n, src.fingerprint(),
                                   extra_key=prep.fingerprint(), progress=progress)
        for task in t.tasks:
            logits[task.name] = found.tasks[task.name]
        for block, b in enumerate(t.boundaries, start=1):
            taps[(t.name, block)] = found.taps[b.name]
    inputs = cached_inputs(Path(cache_root) / "inputs", source, preprocess_of(reference.config), n)
    labels = {}
    if config.data.labels and source.labels() is not None:
        labels = eval_labels(source, config.data.labels, list(logits))
    return SplitData(inputs, logits, taps, labels)
