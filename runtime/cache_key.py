"""What a target cache entry is keyed on (runtime.cache).

Identity: a directory per key, the sha256 of (teacher file sha256, data fingerprint,
sorted tap names, task specs, preprocessing fingerprint, tap dtype, format version).
The data and preprocessing fingerprints come from the caller (:func:`array_fingerprint`
for an in-memory array; a data source's own ``fingerprint()`` otherwise).
"""

import hashlib
import json

import numpy as np

FORMAT_VERSION = 2
TAP_DTYPES = ("float32", "float16")


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
            digest.update(np.ascontiguousarray(x[start : start + 1024]).data)
    else:
        rows = np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))
        digest.update(rows.tobytes())
        digest.update(np.ascontiguousarray(x[rows]).data)
    return digest.hexdigest()


def key_parts(teacher, data_fingerprint, extra_key="", tap_dtype="float32", keep_taps=True):
    """Everything the cached targets depend on, as a JSON-able dict."""
    return {
        "format": FORMAT_VERSION,
        "teacher_sha256": teacher.sha256,
        "data": data_fingerprint,
        "taps": sorted(teacher.boundaries) if keep_taps else [],
        "tap_dtype": tap_dtype,
        "tasks": sorted((t.to_dict() for t in teacher.tasks), key=lambda d: d["name"]),
        "preprocessing": extra_key,
    }


def cache_key(parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
