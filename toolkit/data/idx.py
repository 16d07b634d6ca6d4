"""MNIST / Fashion-MNIST IDX files (http://yann.lecun.com/exdb/mnist/): a big-endian
header (magic 2051 for images, 2049 for labels, then the dimensions) and uint8 data,
gzipped or not. Split `train` reads `train-*`, split `test` reads `t10k-*`."""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import DataError
from amalgam.toolkit.data.arrays import ArraySource
from amalgam.toolkit.data.source import digest

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
_PREFIX = {"train": "train", "test": "t10k"}


def _find(folder: Path, prefix: str, kind: str, rank: int) -> Path | None:
    """`train-images-idx3-ubyte[.gz]`, also the `train-images.idx3-ubyte` spelling."""
    for stem in (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, bytes]:
    """(uint8 array, the file's bytes); DataError for a wrong magic or a short file."""
    raw = path.read_bytes()
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None
    what = "images" if magic == IMAGES_MAGIC else "labels"
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise DataError(f"{path}: expected IDX magic number {magic} ({what}), found {found}")
    rank = magic - 2048
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{rank}I", data[4:header])
    count = int(np.prod(dims))
    if len(data) - header < count:
        raise DataError(
            f"{path}: truncated: expected {count} bytes of {what} for shape {dims}, found {len(data) - header}"
        )
    return np.frombuffer(data, np.uint8, count, header).reshape(dims), raw


def open_idx(folder, split="train", size=None, channels=None, limit=None) -> ArraySource:
    """Images (and labels when their file is there) of one split of an IDX folder."""
    folder = Path(folder)
    if split not in _PREFIX:
        raise DataError(f"{folder}: idx data has splits 'train' and 'test', found {split!r}")
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder of IDX files")
    prefix = _PREFIX[split]
    images_file = _find(folder, prefix, "images", 3)
    if images_file is None:
        raise DataError(f"{folder}: no {prefix}-images-idx3-ubyte[.gz] for split {split!r}")
    images, raw_images = read_idx(images_file, IMAGES_MAGIC)
    labels, raw_labels = None, b""
    labels_file = _find(folder, prefix, "labels", 1)
    if labels_file is not None:
        labels, raw_labels = read_idx(labels_file, LABELS_MAGIC)
        if len(labels) != len(images):
            raise DataError(f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file.name}")
        labels = labels.astype(np.int64)
    identity = ("idx", split, digest(raw_images), digest(raw_labels))
    return ArraySource(folder, images[:, None], labels, identity=identity, size=size, channels=channels, limit=limit)
