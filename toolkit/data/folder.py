"""A folder of unlabeled images, searched recursively and sorted for determinism.
Files whose header does not read are skipped (and counted) or fail the run, per
`on_corrupt`; images are converted and resized to the target on load."""

import logging
import os
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import DataError
from amalgam.toolkit.data.imagefile import EXTENSIONS, load_image, probe
from amalgam.toolkit.data.source import Source, digest

log = logging.getLogger("amalgam.data")


class FolderSource(Source):
    """Every png, jpg, jpeg, bmp, gif, webp, tif under `path`. size None: the first
    image's size; channels None: 3."""

    def __init__(self, path, size=None, channels=None, limit=None, on_corrupt="skip"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: expected a folder of images")
        found = sorted(
            (p for p in self.path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()),
            key=lambda p: p.relative_to(self.path).as_posix(),
        )
        good, self.skipped = [], []
        for file in found:
            if limit is not None and len(good) == limit:
                break
            result = probe(file)
            if isinstance(result, str):
                if on_corrupt == "fail":
                    raise DataError(f"{file}: not a readable image ({result})")
                self.skipped.append(file)
            else:
                good.append((file, result))
        if self.skipped:
            log.warning("%s: skipped %d unreadable image(s), first: %s", self.path, len(self.skipped), self.skipped[0])
        if not good:
            raise DataError(
                f"{self.path}: no readable images ({', '.join(EXTENSIONS)}) found, {len(self.skipped)} unreadable"
            )
        self.files = [f for f, _ in good]
        width, height = good[0][1]
        self.size = tuple(size) if size is not None else (height, width)
        self.channels = channels or 3
        self._limit = limit

    def __len__(self) -> int:
        return len(self.files)

    def images(self, indices) -> np.ndarray:
        batch = [load_image(self.files[i], self.size, self.channels) for i in indices]
        if not batch:
            return np.zeros((0, self.channels, *self.size), np.float32)
        return np.stack(batch).astype(np.float32) / 255.0

    def fingerprint(self) -> str:
        """From names, sizes and modification times: cheap for large folders."""
        stats = [
            (f.relative_to(self.path).as_posix(), s.st_size, s.st_mtime_ns)
            for f, s in ((f, os.stat(f)) for f in self.files)
        ]
        return digest("folder", stats, len(self.skipped), self._limit, self.size, self.channels)
