"""The interface every data source implements: an indexable set of images with
optional labels and a fingerprint. Images come out float32 (n, C, H, W) in [0, 1];
the teacher's own preprocessing (toolkit.data.preprocess) comes after."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def digest(*parts) -> str:
    """A short stable hash of the parts' reprs (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


class Source:
    """A dataset of images: `len`, `images(indices)`, `labels()`, `label_names`,
    `fingerprint()`. Subclasses set `path`, `size`, `channels` and `label_names`."""

    path: Path
    size: tuple[int, int] | None = None
    channels: int | None = None
    label_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def images(self, indices) -> np.ndarray:
        """float32 (n, C, H, W) in [0, 1] for the given sample indices."""
        raise NotImplementedError

    def labels(self) -> np.ndarray | None:
        """(n,) int class per sample, (n, k) 0/1 attributes, or None if unlabeled."""
        return None

    def fingerprint(self) -> str:
        """Stable identity of what this source yields; changes when the data does."""
        raise NotImplementedError

    def __getitem__(self, i: int):
        """(image (C, H, W), label or None) for one sample."""
        labels = self.labels()
        return self.images([i])[0], (None if labels is None else labels[i])

    def batches(self, batch_size: int, indices=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, images) in order, batch_size at a time."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield chunk, self.images(chunk)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, n={len(self)})"
