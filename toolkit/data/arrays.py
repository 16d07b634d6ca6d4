"""In-memory image arrays as a source (the `numpy` format, and the backing of
`idx`): uint8 or float pixels kept once, converted to float per batch."""

import io
import zipfile
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import DataError
from amalgam.toolkit.data.pixels import conform
from amalgam.toolkit.data.source import Source, digest


class ArraySource(Source):
    """Images (N, C, H, W) uint8 (0..255) or float (0..1), optional labels."""

    def __init__(self, path, images, labels=None, label_names=None, *, identity, size=None, channels=None, limit=None):
        self.path = Path(path)
        self._images = images[:limit]
        self._labels = None if labels is None else labels[:limit]
        self.label_names = None if label_names is None else [str(n) for n in label_names]
        self.size = None if size is None else tuple(size)
        self.channels = channels
        self._identity = (identity, limit, self.size, channels)
        if len(self._images) == 0:
            raise DataError(f"{self.path}: no images")

    def __len__(self) -> int:
        return len(self._images)

    def images(self, indices) -> np.ndarray:
        batch = self._images[np.asarray(indices, dtype=np.intp)]
        batch = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 else batch
        return conform(batch, self.size, self.channels)

    def labels(self) -> np.ndarray | None:
        return self._labels

    def fingerprint(self) -> str:
        return digest(type(self).__name__, *self._identity)


def _channels_first(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W); C is 1, 3 or 4."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3, 4):
        return images
    if images.ndim == 4 and images.shape[3] in (1, 3, 4):
        return images.transpose(0, 3, 1, 2)
    raise DataError(
        f"{path}: 'images' must be (N, H, W), (N, H, W, C) or (N, C, H, W) "
        f"with C in 1, 3, 4; found shape {images.shape}"
    )


def _check_pixels(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{path}: 'images' must be uint8 (0..255) or float (0..1), found {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise DataError(
            f"{path}: float 'images' must lie in [0, 1], found [{low}, {high}] (store uint8 for 0..255 pixels)"
        )
    return images.astype(np.float32, copy=False)


def _check_labels(labels, names, n: int, path: Path):
    if labels is None:
        return None
    if labels.ndim not in (1, 2) or len(labels) != n:
        raise DataError(
            f"{path}: 'labels' must be (N,) classes or (N, k) attributes with "
            f"N = {n} images, found shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) and not labels.dtype == bool:
        raise DataError(f"{path}: 'labels' must be integers, found {labels.dtype}")
    if names is not None and labels.ndim == 2 and len(names) != labels.shape[1]:
        raise DataError(f"{path}: {len(names)} 'label_names' for {labels.shape[1]} label columns")
    return labels.astype(np.uint8 if labels.ndim == 2 else np.int64)


def open_npz(path, size=None, channels=None, limit=None) -> ArraySource:
    """An .npz with `images`, optional `labels` and `label_names`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except IsADirectoryError:
        raise DataError(f"{path}: expected an .npz file, found a folder") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        reason = (
            "reading it would mean unpickling objects, which is never done: store plain uint8 or "
            "float arrays with np.savez"
            if "pickle" in str(e)
            else str(e)
        )
        raise DataError(f"{path}: cannot read as .npz ({reason})") from None
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array; found {sorted(arrays)}")
    if len(arrays["images"]) == 0:
        raise DataError(f"{path}: no images ('images' is empty)")
    images = _check_pixels(_channels_first(arrays["images"], path), path)
    names = arrays.get("label_names")
    labels = _check_labels(arrays.get("labels"), names, len(images), path)
    return ArraySource(
        path, images, labels, names, identity=("npz", digest(raw)), size=size, channels=channels, limit=limit
    )
