"""Pixel-array helpers shared by the sources and the teacher preprocessing: channel
conversion and resizing of float image batches laid out (n, C, H, W)."""

import numpy as np

from amalgam.runtime.errors import DataError

# ITU-R 601 luma, the weights Pillow uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def convert_channels(batch: np.ndarray, channels: int | None) -> np.ndarray:
    """1 <-> 3 channels (grey repeated / luma); a 4th (alpha) channel is dropped."""
    have = batch.shape[1]
    if channels is None or have == channels:
        return batch
    if have == 4:
        batch, have = batch[:, :3], 3
        if channels == 3:
            return batch
    if have == 1 and channels == 3:
        return np.repeat(batch, 3, axis=1)
    if have == 3 and channels == 1:
        return np.einsum("nchw,c->nhw", batch, _LUMA)[:, None].astype(batch.dtype)
    raise DataError(f"cannot convert images with {have} channels to {channels}")


def _taps(n_in: int, n_out: int):
    """Source rows (lo, hi) and weights for bilinear sampling, half-pixel centres."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(np.intp)
    return lo, np.minimum(lo + 1, n_in - 1), (x - lo).astype(np.float32)


def resize(batch: np.ndarray, size, method: str = "bilinear") -> np.ndarray:
    """Resize (n, C, H, W) to size (H', W'); the same sampling as torch's
    interpolate(align_corners=False) without antialiasing."""
    h, w = batch.shape[2:]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return batch
    if method == "nearest":
        rows = np.minimum((np.arange(out_h) * (h / out_h)).astype(np.intp), h - 1)
        cols = np.minimum((np.arange(out_w) * (w / out_w)).astype(np.intp), w - 1)
        return batch[:, :, rows][:, :, :, cols]
    if method != "bilinear":
        raise ValueError(f"resize method: expected 'bilinear' or 'nearest', found {method!r}")
    lo, hi, t = _taps(h, out_h)
    batch = batch[:, :, lo] * (1 - t)[:, None] + batch[:, :, hi] * t[:, None]
    lo, hi, t = _taps(w, out_w)
    return (batch[..., lo] * (1 - t) + batch[..., hi] * t).astype(np.float32)


def conform(batch: np.ndarray, size=None, channels=None, method="bilinear") -> np.ndarray:
    """Float32 (n, C, H, W) in [0, 1] with the given channels and size (None: keep).
    Both steps are linear, so the one that shrinks the batch goes first."""
    batch = np.asarray(batch, dtype=np.float32)
    if channels is not None and channels > batch.shape[1]:
        return convert_channels(conform(batch, size, None, method), channels)
    batch = convert_channels(batch, channels)
    return batch if size is None else resize(batch, tuple(size), method)
