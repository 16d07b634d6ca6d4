"""The target cache: each teacher's task logits and taps for a dataset, on disk.

The paper's targets (a teacher's predictions on the chosen tasks, and its features at
every block boundary for the layer-wise hints) do not change while the student
trains, so one ONNX Runtime pass per teacher writes them once; every later epoch
(and every later run on the same data) reads them back as read-only memory maps.

Identity: a directory per key, the sha256 of (teacher file sha256, data fingerprint,
sorted tap names, task specs, preprocessing fingerprint, format version). The data
and preprocessing fingerprints come from the caller (:func:`array_fingerprint` for an
in-memory array; a data source's own ``fingerprint()`` otherwise).

Crash safety: arrays are written into ``root/.tmp-<dir>-<random>`` and the manifest
(key parts, shapes, dtypes, n, format version) last; the directory is renamed into
place only when complete. A directory without a valid manifest, or whose arrays do
not have the manifest's shapes, is never reused: it is rebuilt.

Flat memory: each array is created as ``.npy`` (``np.lib.format.open_memmap`` writes
the header and sizes the file) and batches are written through the file, row range
by row range, as they arrive. Writing through a writable memory map instead would
leave every written page resident in the process, so its RSS would grow with n.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OWNER = "owner.json"


def array_fingerprint(x, samples=256):
    """A stable hex fingerprint of an in-memory array dataset ``x`` of shape ``(n, ...)``.

    sha256 over dtype, shape and the bytes of ``samples`` evenly spaced rows (all rows
    when there are fewer, or when ``samples`` is None). It costs O(samples) rows and
    sees any change of shape, dtype or of a sampled row; a change confined to rows it
    did not sample goes unseen: pass ``samples=None`` to hash every byte.
    """
    x = np.asarray(x)
    digest = hashlib.sha256(f"{x.dtype.str}|{x.shape}".encode())
    n = x.shape[0] if x.ndim else 0
    if samples is None or n <= samples:
        for start in range(0, n, 1024):
            digest.update(np.ascontiguousarray(x[start:start + 1024]).data)
    else:
        rows = np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))
        digest.update(rows.tobytes())
        digest.update(np.ascontiguousarray(x[rows]).data)
    return digest.hexdigest()


def key_parts(teacher, data_fingerprint, extra_key=""):
    """Everything the cached targets depend on, as a JSON-able dict."""
    return {
        "format": FORMAT_VERSION,
        "teacher_sha256": teacher.sha256,
        "data": data_fingerprint,
        "taps": sorted(teacher.boundaries),
        "tasks": sorted((t.to_dict() for t in teacher.tasks), key=lambda d: d["name"]),
        "preprocessing": extra_key,
    }


def cache_key(parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class CachedTargets:
    """A teacher's targets for n samples: ``tasks[name]`` and ``taps[name]`` are
    read-only memory maps of shape ``(n, ...)``; ``built`` is False when reused."""

    tasks: dict
    taps: dict
    key: str
    built: bool
    path: Path
    n: int


class _RowWriter:
    """One ``.npy`` of shape ``(n, *row_shape)``, filled in row order, batch by batch."""

    def __init__(self, path, label, n, first):
        self.path, self.label, self.row_shape = path, label, first.shape[1:]
        self.dtype = first.dtype
        header = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(n, *self.row_shape))
        self.offset, self.row_bytes = header.offset, first[:1].nbytes
        del header
        self.file = open(path, "r+b")

    def write(self, start, values):
        if values.shape[1:] != self.row_shape or values.dtype != self.dtype:
            raise DataError(f"{self.label}: a batch gave rows {values.shape[1:]} {values.dtype}, "
                            f"earlier batches {self.row_shape} {self.dtype}")
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(np.ascontiguousarray(values).data)

    def close(self):
        self.file.close()


class TargetCache:
    """Target caches of any number of teachers and datasets, under ``root``."""

    def __init__(self, root):
        self.root = Path(root)

    def directory(self, teacher, key):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", teacher.name)[:48]
        return self.root / f"{safe}-{key[:24]}"

    def get_or_build(self, teacher, batches, n, data_fingerprint, extra_key="", progress=True):
        """The cached targets of ``teacher`` on a dataset, built by one pass if needed.

        ``batches()`` returns an iterable of preprocessed input batches ``(b, ...)``
        that together hold exactly ``n`` samples in dataset order; it is called only
        when the cache has to be built.
        """
        if n < 1:
            raise DataError(f"target cache for {teacher.path}: the dataset is empty (n={n})")
        parts = key_parts(teacher, data_fingerprint, extra_key)
        key = cache_key(parts)
        final = self.directory(teacher, key)
        found = _open(final, key, n)
        if found is not None:
            return found
        tmp = self.root / f".tmp-{final.name}-{uuid.uuid4().hex[:12]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _sweep_stale(self.root, final.name)
            tmp.mkdir()
            (tmp / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            arrays = _write_arrays(tmp, teacher, batches, n, progress)
            _write_json(tmp / MANIFEST, {"format": FORMAT_VERSION, "key": key, "parts": parts, "n": n,
                                         "teacher": str(teacher.path), "arrays": arrays})
            (tmp / OWNER).unlink()
            _publish(tmp, final, key, n)
        except OSError as e:  # disk full, read-only or unwritable cache folder
            raise DataError(f"{self.root}: cannot write the target cache of {teacher.path} "
                            f"({e.strerror or e}); free space there or use another cache folder") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        targets = _open(final, key, n)
        if targets is None:
            raise DataError(f"{final}: the target cache just written does not read back")
        targets.built = True
        return targets


def _write_arrays(tmp, teacher, batches, n, progress):
    """One pass of ``teacher`` over ``batches()``; returns the manifest's array entries."""
    writers, written = {}, 0
    try:
        with tqdm(total=n, unit="img", desc=f"targets {teacher.name}", file=sys.stderr,
                  disable=not progress) as bar:
            for batch in batches():
                out = teacher.run(batch)
                rows = len(batch)
                if written + rows > n:
                    raise DataError(f"target cache for {teacher.path}: the batches hold more than n={n} samples")
                named = [("task", k, v) for k, v in out.tasks.items()] + [("tap", k, v) for k, v in out.taps.items()]
                if not writers:
                    writers = {(kind, name): _RowWriter(tmp / f"{kind}-{i:03d}.npy", f"{kind} {name!r}", n, v)
                               for i, (kind, name, v) in enumerate(named)}
                for kind, name, values in named:
                    writers[kind, name].write(written, values)
                written += rows
                bar.update(rows)
    finally:
        for w in writers.values():
            w.close()
    if written != n:
        raise DataError(f"target cache for {teacher.path}: the batches held {written} samples, expected n={n}")
    return [{"kind": kind, "name": name, "file": w.path.name, "shape": [n, *w.row_shape], "dtype": w.dtype.str}
            for (kind, name), w in writers.items()]


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _open(directory, key, n):
    """The cached targets in ``directory`` if it is complete and valid, else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if (manifest["format"], manifest["key"], manifest["n"]) != (FORMAT_VERSION, key, n):
            return None
        out = {"task": {}, "tap": {}}
        for entry in manifest["arrays"]:
            array = np.load(directory / entry["file"], mmap_mode="r", allow_pickle=False)
            if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"] or array.shape[0] != n:
                return None
            out[entry["kind"]][entry["name"]] = array
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = manifest["parts"]
    if sorted(out["task"]) != sorted(t["name"] for t in parts["tasks"]) or sorted(out["tap"]) != parts["taps"]:
        return None
    return CachedTargets(out["task"], out["tap"], key, False, directory, n)


def _publish(tmp, final, key, n):
    """Rename the complete ``tmp`` into place; an invalid ``final`` is moved aside first."""
    if final.exists():
        if _open(final, key, n) is not None:  # another process finished first
            return
        stale = final.with_name(f".stale-{final.name}-{uuid.uuid4().hex[:12]}")
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)


def _sweep_stale(root, name):
    """Remove temp dirs for ``name`` left by killed builds on this host."""
    for tmp in root.glob(f".tmp-{name}-*"):
        try:
            owner = json.loads((tmp / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
