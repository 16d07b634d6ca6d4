"""CelebA (aligned faces): `img_align_celeba/`, `list_attr_celeba.txt` (a count line,
a line of the 40 attribute names, then `file  1 -1 ...`) and `list_eval_partition.txt`
(`file 0|1|2` for train/valid/test). The attributes become 0/1 labels (n, 40).
The files may also sit in the official `Img/`, `Anno/`, `Eval/` sub-folders."""

import hashlib
import os
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import DataError
from amalgam.toolkit.data.imagefile import load_image, probe
from amalgam.toolkit.data.source import Source, digest

_SPLITS = {"train": "0", "valid": "1", "test": "2"}


def _locate(root: Path, name: str, sub: str) -> Path:
    for candidate in (root / name, root / sub / name):
        if candidate.exists():
            return candidate
    raise DataError(f"{root}: no {name} (looked in {root} and {root / sub})")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def parse_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, uint8 (n, k) 0/1 values) of list_attr_celeba.txt."""
    lines = _read_lines(path)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(
            f"{path}:1: expected the number of images on the first line, "
            f"found {lines[0] if lines else 'an empty file'!r}"
        )
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DataError(
                f"{path}:{number}: expected a file name and {len(names)} values "
                f"of 1 or -1, found {line.strip()[:120]!r}"
            )
        files.append(parts[0])
        rows.append([v == "1" for v in parts[1:]])
    if len(files) != int(lines[0]):
        raise DataError(f"{path}: the first line says {int(lines[0])} images, found {len(files)}")
    return names, files, np.array(rows, dtype=np.uint8).reshape(len(files), len(names))


def parse_partition(path: Path) -> dict[str, str]:
    """file name -> '0' | '1' | '2' from list_eval_partition.txt."""
    out = {}
    for number, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{number}: expected a file name and 0, 1 or 2, found {line.strip()[:120]!r}")
        out[parts[0]] = parts[1]
    return out


def _first_size(path: Path) -> tuple[int, int]:
    result = probe(path)
    if isinstance(result, str):
        raise DataError(f"{path}: not a readable image ({result})")
    return result


class CelebASource(Source):
    """One split (train, valid, test or all) of a CelebA folder, in the attribute
    file's order; size None: the first image's (218 x 178); channels None: RGB."""

    def __init__(self, path, split="train", size=None, channels=None, limit=None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: expected a CelebA folder")
        self._attr_file = _locate(self.path, "list_attr_celeba.txt", "Anno")
        self.image_dir = _locate(self.path, "img_align_celeba", "Img")
        self.label_names, files, values = parse_attributes(self._attr_file)
        self._part_file = None
        if split != "all":
            self._part_file = _locate(self.path, "list_eval_partition.txt", "Eval")
            part = parse_partition(self._part_file)
            missing = [f for f in files if f not in part]
            if missing:
                raise DataError(f"{self._part_file}: no partition for {len(missing)} image(s), first: {missing[0]}")
            keep = [i for i, f in enumerate(files) if part[f] == _SPLITS[split]]
            files, values = [files[i] for i in keep], values[keep]
        self.files, self._values = files[:limit], values[:limit]
        if not self.files:
            raise DataError(f"{self.path}: no images in split {split!r}")
        present = set(os.listdir(self.image_dir))
        absent = [f for f in self.files if f not in present]
        if absent:
            raise DataError(
                f"{self.image_dir}: {len(absent)} image(s) listed in "
                f"{self._attr_file.name} are missing, first: {absent[0]}"
            )
        if size is None:
            width, height = _first_size(self.image_dir / self.files[0])
            size = (height, width)
        self.size = tuple(size)
        self.channels = channels or 3
        self._identity = (split, limit)

    def __len__(self) -> int:
        return len(self.files)

    def images(self, indices) -> np.ndarray:
        batch = [load_image(self.image_dir / self.files[i], self.size, self.channels) for i in indices]
        if not batch:
            return np.zeros((0, self.channels, *self.size), np.float32)
        return np.stack(batch).astype(np.float32) / 255.0

    def labels(self) -> np.ndarray:
        return self._values

    def fingerprint(self) -> str:
        """Annotation files by content, images by name, size and modification time."""
        files = [self._attr_file] + ([self._part_file] if self._part_file else [])
        notes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
        stats = [(f, s.st_size, s.st_mtime_ns) for f, s in ((f, os.stat(self.image_dir / f)) for f in self.files)]
        return digest("celeba", notes, stats, *self._identity, self.size, self.channels)
