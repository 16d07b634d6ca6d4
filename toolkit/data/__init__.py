"""Data sources (unlabeled training images, labeled evaluation images) and the
teachers' preprocessing. numpy in, numpy out: nothing here needs torch.

``open_source(spec, size, channels)`` picks the reader for ``spec["format"]``:
``idx`` (MNIST-style), ``folder`` (any images), ``celeba``, ``numpy`` (.npz)."""

from pathlib import Path

from amalgam.runtime.errors import BadInputError, DataError
from amalgam.toolkit.data.arrays import ArraySource, open_npz
from amalgam.toolkit.data.celeba import CelebASource
from amalgam.toolkit.data.folder import FolderSource
from amalgam.toolkit.data.idx import open_idx
from amalgam.toolkit.data.labels import eval_labels
from amalgam.toolkit.data.preprocess import Preprocess, input_shape
from amalgam.toolkit.data.source import Source
from amalgam.toolkit.data.split import split_holdout

FORMATS = ("idx", "folder", "celeba", "numpy")


def open_source(spec, size=None, channels=None, on_corrupt="skip") -> Source:
    """A source from a config's `data.train` / `data.eval` (model or dict with format,
    path, split, limit). size (H, W) and channels: what the images come out as
    (None: as stored; a folder needs one size and takes its first image's)."""
    spec = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
    fmt, path = spec.get("format"), Path(spec.get("path", ""))
    split, limit = spec.get("split") or "train", spec.get("limit")
    if fmt not in FORMATS:
        raise DataError(f"{path}: data format: expected one of {list(FORMATS)}, found {fmt!r}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if fmt == "idx":
        return open_idx(path, split, size, channels, limit)
    if fmt == "numpy":
        return open_npz(path, size, channels, limit)
    if fmt == "celeba":
        return CelebASource(path, split, size, channels, limit)
    return FolderSource(path, size, channels, limit, on_corrupt)


def source_spec(text, split="train"):
    """``FORMAT:PATH`` or a bare path (format inferred) -> a data source spec dict.

    Inferred: ``*.npz`` -> numpy; a folder with ``list_attr_celeba.txt`` (or
    ``Anno/``) -> celeba; a folder with ``*-idx3-ubyte*`` files -> idx; any other
    folder -> folder of images.
    """
    fmt, sep, rest = str(text).partition(":")
    if sep and fmt in FORMATS:
        return {"format": fmt, "path": rest, "split": split}
    path = Path(text)
    if not path.exists():
        raise BadInputError(
            f"{path}: no such data file or folder (expected FORMAT:PATH with FORMAT "
            f"one of {list(FORMATS)}, or a path to an .npz file or a folder)"
        )
    if path.is_file():
        if path.suffix == ".npz":
            return {"format": "numpy", "path": str(path), "split": split}
        raise BadInputError(
            f"{path}: cannot tell the data format from the file; use FORMAT:PATH with FORMAT one of {list(FORMATS)}"
        )
    if (path / "list_attr_celeba.txt").exists() or (path / "Anno").is_dir():
        fmt = "celeba"
    elif any(path.glob("*-idx3-ubyte*")) or any(path.glob("*.idx3-ubyte*")):
        fmt = "idx"
    else:
        fmt = "folder"
    return {"format": fmt, "path": str(path), "split": split}


__all__ = [
    "ArraySource",
    "CelebASource",
    "FolderSource",
    "Preprocess",
    "Source",
    "eval_labels",
    "input_shape",
    "open_idx",
    "open_npz",
    "open_source",
    "source_spec",
    "split_holdout",
]
