"""One image file in, one uint8 array (C, H, W) out, via Pillow."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from amalgam.runtime.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_FAILURES = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def probe(path: Path) -> tuple[int, int] | str:
    """The image's (width, height) if its header (and, where the format has them,
    its checksums) reads back; otherwise the reason it does not."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size
    except _FAILURES as e:
        return f"{type(e).__name__}: {e}"


def load_image(path: Path, size=None, channels: int = 3) -> np.ndarray:
    """uint8 (C, H, W): converted to grey (1) or RGB (3), resized to size (H, W)."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            if size is not None and im.format == "JPEG":
                im.draft(mode, (size[1], size[0]))  # decode at a reduced scale when it can
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(im)
    except _FAILURES as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
