"""The target cache: each teacher's task logits and taps for a dataset, on disk, in chunks.

The paper's targets (a teacher's predictions on the chosen tasks, and its features at
every block boundary for the layer-wise hints) do not change while the student
trains, so one ONNX Runtime pass per teacher writes them once; every later epoch
(and every later run on the same data) reads them back as read-only memory maps.

Identity: a directory per key (:mod:`~amalgam.runtime.cache_key`: teacher, data, taps, tasks,
preprocessing, tap dtype, format version).

Chunks: rows ``[i * chunk_rows, (i + 1) * chunk_rows)`` (a whole number of batches)
form chunk ``i``, a folder ``c000000/`` with one ``.npy`` per array and ``chunk.json``
(its rows and each file's sha256). In a job of ``world`` processes, rank ``r`` computes
chunks ``r, r + world, ...``; the chunks do not depend on the world size, so any world
size writes the same bytes. A chunk is written into ``.tmp-c000000-<random>`` and
renamed into place when complete. After a barrier, rank 0 checks every chunk and
publishes ``manifest.json`` (key parts with the teacher and preprocessing hashes, each
array's dtype and shape, each chunk's checksums), renamed into place last.

Reuse: a directory whose manifest matches and whose chunk files have the manifest's
shapes is reused as is. Otherwise a chunk is kept only if its files match the
checksums in its own ``chunk.json``; only missing or corrupt chunks are recomputed.

Flat memory: each chunk file is written through the file, batch by batch, hashed as
it goes; writing through a writable memory map would leave every written page
resident, so RSS would grow with n. Readers see a :class:`ChunkedArray` over the
chunks' read-only memory maps.

This module never imports ``toolkit``: a job's rank, world size and barrier come in
as plain arguments.
"""

import contextlib
import hashlib
import io
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

from amalgam.runtime.cache_key import FORMAT_VERSION, TAP_DTYPES, cache_key, key_parts
from amalgam.runtime.errors import DataError
from amalgam.runtime.files import atomic_path
from amalgam.runtime.key_lock import KeyLock, take_turn

MANIFEST = "manifest.json"
CHUNK = "chunk.json"
OWNER = "owner.json"
BATCH = 256
CHUNK_BATCHES = 32


def chunk_rows(batch=BATCH, chunk_batches=CHUNK_BATCHES):
    return batch * chunk_batches


def chunk_ranges(n, rows):
    """``(index, start, stop)`` of every chunk of ``n`` rows, ``rows`` per chunk."""
    return [(i, start, min(n, start + rows)) for i, start in enumerate(range(0, n, rows))]


class ChunkedArray:
    """One cached array of shape ``(n, ...)`` over its chunks' read-only memory maps.

    Indexing by an int, a slice or an index array returns numpy rows (copied from the
    chunks that hold them); ``np.asarray`` gives the whole array.
    """

    def __init__(self, chunks):
        self.chunks = chunks
        self.starts = np.cumsum([0] + [len(c) for c in chunks])
        self.shape = (int(self.starts[-1]), *chunks[0].shape[1:])
        self.dtype = chunks[0].dtype
        self.ndim = len(self.shape)
        self.nbytes = sum(c.nbytes for c in chunks)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        if isinstance(rows, (int, np.integer)):
            row = int(rows) + (self.shape[0] if rows < 0 else 0)
            c = int(np.searchsorted(self.starts, row, "right")) - 1
            return self.chunks[c][(row - self.starts[c], *rest)]
        rows = np.arange(self.shape[0])[rows] if isinstance(rows, slice) else np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.starts, rows, "right") - 1
        for c in np.unique(which):
            here = which == c
            out[here] = self.chunks[c][rows[here] - self.starts[c]]
        return out[(slice(None), *rest)] if rest else out

    def __setitem__(self, index, value):
        raise ValueError("the target cache is read-only")

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


@dataclass
class CachedTargets:
    """A teacher's targets for n samples: ``tasks[name]`` and ``taps[name]`` are
    :class:`ChunkedArray` of shape ``(n, ...)``; ``built`` is False when reused as is."""

    tasks: dict
    taps: dict
    key: str
    built: bool
    path: Path
    n: int


class TargetCache:
    """Target caches of any number of teachers and datasets, under ``root``."""

    def __init__(self, root):
        self.root = Path(root)

    def directory(self, teacher, key):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", teacher.name)[:48]
        return self.root / f"{safe}-{key[:24]}"

    def get_or_build(
        self,
        teacher,
        read,
        n,
        data_fingerprint,
        extra_key="",
        progress=True,
        batch=BATCH,
        chunk_batches=CHUNK_BATCHES,
        tap_dtype="float32",
        keep_taps=True,
        rank=0,
        world=1,
        barrier=None,
        broadcast=None,
    ):
        """The cached targets of ``teacher`` on a dataset, built (or completed) if needed.

        ``read(start, stop)`` returns the preprocessed inputs of rows ``[start, stop)``;
        it is called only for chunks that have to be computed. ``keep_taps=False``
        caches the task logits alone. In a job, every rank calls this with its
        ``rank``, the ``world`` size, a ``barrier()`` and a ``broadcast(value)`` (rank 0's
        value on every rank) callable. Another job building the same entry is waited
        for (:mod:`~amalgam.runtime.key_lock`), then its entry is read.
        """
        if n < 1:
            raise DataError(f"target cache for {teacher.path}: the dataset is empty (n={n})")
        if tap_dtype not in TAP_DTYPES:
            raise DataError(f"target cache: tap dtype {tap_dtype!r}: expected one of {TAP_DTYPES}")
        if world > 1 and (barrier is None or broadcast is None):
            raise ValueError("a job of several ranks passes its barrier and broadcast")
        barrier, broadcast = barrier or (lambda: None), broadcast or (lambda value: value)
        parts = key_parts(teacher, data_fingerprint, extra_key, tap_dtype, keep_taps)
        key = cache_key(parts)
        final = self.directory(teacher, key)
        if broadcast(_open(final, key, n) is not None):  # rank 0 decides, so that every rank takes one path
            return _read_back(final, key, n, built=False)
        chunks = chunk_ranges(n, chunk_rows(batch, chunk_batches))
        writer = _ChunkWriter(final, teacher, read, n, batch, np.dtype(tap_dtype) if keep_taps else None)
        lock = KeyLock(final.with_name(f"{final.name}.lock"))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            take_turn(lock, rank, broadcast, progress)
            try:
                if broadcast(_open(final, key, n) is not None):  # built by the job this one waited for
                    return _read_back(final, key, n, built=False)
                writer.write_all(chunks[rank::world], progress)
                barrier()
                if rank == 0:
                    _publish_manifest(final, teacher, key, parts, n, chunks)
                barrier()
            finally:
                _remove_if_empty(final)
                lock.release()
        except OSError as e:  # disk full, read-only or unwritable cache folder
            raise DataError(
                f"{self.root}: cannot write the target cache of {teacher.path} "
                f"({e.strerror or e}); free space there or use another cache folder"
            ) from e
        return _read_back(final, key, n, built=True)


def _read_back(final, key, n, built):
    targets = _open(final, key, n)
    if targets is None:
        raise DataError(f"{final}: the target cache {'just written ' if built else ''}does not read back")
    targets.built = built
    return targets


class _ChunkWriter:
    """Computes chunks of one teacher's targets into ``final``, each renamed into place."""

    def __init__(self, final, teacher, read, n, batch, tap_dtype):
        """``tap_dtype`` None: the taps are not kept."""
        self.final, self.teacher, self.read, self.n = final, teacher, read, n
        self.batch, self.tap_dtype = batch, tap_dtype

    def write_all(self, chunks, progress):
        todo = [c for c in chunks if _chunk_files(self.final / _chunk_name(c[0]), c[1], c[2], verify=True) is None]
        if not todo:
            return
        self.final.mkdir(parents=True, exist_ok=True)
        with tqdm(
            total=sum(stop - start for _, start, stop in todo),
            unit="img",
            file=sys.stderr,
            desc=f"targets {self.teacher.name}",
            disable=not progress,
        ) as bar:
            for index, start, stop in todo:
                self.write_chunk(index, start, stop, bar)

    def write_chunk(self, index, start, stop, bar):
        name = _chunk_name(index)
        _sweep_stale(self.final, name)
        tmp = self.final / f".tmp-{name}-{uuid.uuid4().hex[:12]}"
        try:
            tmp.mkdir()
            (tmp / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            arrays = self._arrays(tmp, start, stop, bar)
            _write_json(tmp / CHUNK, {"rows": [start, stop], "arrays": arrays})
            (tmp / OWNER).unlink()
            _replace_dir(tmp, self.final / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _arrays(self, tmp, start, stop, bar):
        """One pass of the teacher over rows ``[start, stop)``; the chunk's array entries."""
        files = {}
        with contextlib.ExitStack() as closing:  # every file closed, even when closing one fails (disk full)
            for lo in range(start, stop, self.batch):
                hi = min(stop, lo + self.batch)
                inputs = self.read(lo, hi)
                if len(inputs) != hi - lo:
                    raise DataError(
                        f"target cache for {self.teacher.path}: reading rows [{lo}, {hi}) gave "
                        f"{len(inputs)} samples; the dataset should hold n={self.n}"
                    )
                out = self.teacher.run(inputs)
                named = [("task", k, v) for k, v in out.tasks.items()]
                if self.tap_dtype is not None:
                    named += [("tap", k, v.astype(self.tap_dtype, copy=False)) for k, v in out.taps.items()]
                if not files:
                    for i, (kind, name, v) in enumerate(named):
                        files[kind, name] = _NpyWriter(tmp / f"{kind}-{i:03d}.npy", f"{kind} {name!r}", stop - start, v)
                        closing.callback(files[kind, name].close)
                for kind, name, values in named:
                    files[kind, name].write(values)
                bar.update(hi - lo)
        return [{"kind": kind, "name": name, **f.entry()} for (kind, name), f in files.items()]


class _NpyWriter:
    """One ``.npy`` of shape ``(rows, *row_shape)``, appended batch by batch and hashed."""

    def __init__(self, path, label, rows, first):
        self.path, self.label, self.rows = path, label, rows
        self.row_shape, self.dtype = first.shape[1:], first.dtype
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (rows, *self.row_shape),
            },
        )
        self.digest = hashlib.sha256(header.getvalue())
        self.file = open(path, "wb")  # noqa: SIM115 (held open across append() calls, closed by close())
        try:
            self.file.write(header.getvalue())
        except OSError:
            self.file.close()
            raise

    def write(self, values):
        if values.shape[1:] != self.row_shape or values.dtype != self.dtype:
            raise DataError(
                f"{self.label}: a batch gave rows {values.shape[1:]} {values.dtype}, "
                f"earlier batches {self.row_shape} {self.dtype}"
            )
        data = np.ascontiguousarray(values).data
        self.digest.update(data)
        self.file.write(data)

    def entry(self):
        return {
            "file": self.path.name,
            "shape": [self.rows, *self.row_shape],
            "dtype": self.dtype.str,
            "sha256": self.digest.hexdigest(),
        }

    def close(self):
        self.file.close()


def _chunk_name(index):
    return f"c{index:06d}"


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunk_files(directory, start, stop, verify):
    """``chunk.json`` of a complete chunk of rows ``[start, stop)``, else None.

    ``verify``: compare every file with its checksum (a rerun deciding what to recompute)."""
    try:
        chunk = json.loads((directory / CHUNK).read_text())
        if chunk["rows"] != [start, stop]:
            return None
        for entry in chunk["arrays"]:
            path = directory / entry["file"]
            if verify and _file_sha256(path) != entry["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return chunk


def _publish_manifest(final, teacher, key, parts, n, chunks):
    """Rank 0, after every chunk is written: check them and write ``manifest.json`` last."""
    entries, arrays = [], None
    for index, start, stop in chunks:
        chunk = _chunk_files(final / _chunk_name(index), start, stop, verify=False)
        if chunk is None:
            raise DataError(
                f"{final / _chunk_name(index)}: chunk of rows [{start}, {stop}) is missing after "
                f"every rank finished; rerun to compute it"
            )
        entries.append(
            {
                "dir": _chunk_name(index),
                "rows": [start, stop],
                "sha256": {a["file"]: a["sha256"] for a in chunk["arrays"]},
            }
        )
        arrays = arrays or [
            {
                "kind": a["kind"],
                "name": a["name"],
                "file": a["file"],
                "dtype": a["dtype"],
                "shape": [n, *a["shape"][1:]],
            }
            for a in chunk["arrays"]
        ]
    with atomic_path(final / MANIFEST) as tmp:
        _write_json(
            tmp,
            {
                "format": FORMAT_VERSION,
                "key": key,
                "parts": parts,
                "n": n,
                "teacher": str(teacher.path),
                "arrays": arrays,
                "chunks": entries,
            },
        )


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _open(directory, key, n):
    """The cached targets in ``directory`` if its manifest is complete and valid, else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if (manifest["format"], manifest["key"], manifest["n"]) != (FORMAT_VERSION, key, n):
            return None
        out = {"task": {}, "tap": {}}
        for entry in manifest["arrays"]:
            maps = []
            for chunk in manifest["chunks"]:
                start, stop = chunk["rows"]
                array = np.load(directory / chunk["dir"] / entry["file"], mmap_mode="r", allow_pickle=False)
                if list(array.shape) != [stop - start, *entry["shape"][1:]] or array.dtype.str != entry["dtype"]:
                    return None
                maps.append(array)
            out[entry["kind"]][entry["name"]] = ChunkedArray(maps)
            if len(out[entry["kind"]][entry["name"]]) != n:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = manifest["parts"]
    if sorted(out["task"]) != sorted(t["name"] for t in parts["tasks"]) or sorted(out["tap"]) != parts["taps"]:
        return None
    return CachedTargets(out["task"], out["tap"], key, False, directory, n)


def _replace_dir(tmp, final):
    """Rename the complete ``tmp`` into place; an invalid ``final`` is moved aside first."""
    if final.exists():
        stale = final.with_name(f".stale-{final.name}-{uuid.uuid4().hex[:12]}")
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)


def _remove_if_empty(directory):
    with contextlib.suppress(OSError):
        directory.rmdir()


def _sweep_stale(directory, name):
    """Remove temp dirs for chunk ``name`` left by killed builds on this host."""
    for tmp in directory.glob(f".tmp-{name}-*"):
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
