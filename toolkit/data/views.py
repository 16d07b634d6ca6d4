"""Cheap augmented views of the images, by name, for averaged teacher targets
(``training.teacher_views``; MEAL V2's averaged soft outputs, test-time augmentation
of the teacher).

A view maps the sources' float images (n, C, H, W) in [0, 1] of rows ``rows`` to the
same shape, before a teacher's preprocessing. Each view is deterministic (a row gets
the same view in every run), so its teacher logits are cached once.

* ``hflip``: mirrored left to right;
* ``shift:N`` (``shift`` alone: N = 2): moved by (dy, dx), each in [-N, N], a fixed
  pseudo-random pick per row number, the uncovered border filled with 0 (torchvision's
  ``RandomCrop(padding=N)``).

>>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
>>> parse_view("hflip")(x, np.arange(1))[0, 0].tolist()
[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
"""

import numpy as np

from amalgam.runtime.rules import view_name

SHIFT_SEED = 0
VERSION = 2  # part of every view's cache key: bump it when a view's pixels change


def hflip(images, rows):
    return np.ascontiguousarray(images[..., ::-1])


def _mixed(rows):
    """SplitMix64 of each row number: a fixed pseudo-random 64-bit word per row."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows, dtype=np.uint64) + np.uint64(SHIFT_SEED + 0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def offsets(rows, pixels):
    """(dy, dx) of each row in ``rows``, each in [-pixels, pixels]; a function of the row alone."""
    span = 2 * pixels + 1
    code = (_mixed(rows) % np.uint64(span * span)).astype(np.int64)
    return np.stack([code // span, code % span], 1) - pixels


def shift(images, rows, pixels):
    """Each image moved by its row's offsets, zero-filled."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pixels, pixels), (pixels, pixels)))
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets(rows, pixels)):
        out[i] = padded[i, :, pixels - dy : pixels - dy + h, pixels - dx : pixels - dx + w]
    return out


class View:
    """One named view: ``view(images, rows)``; ``name`` is its canonical spelling
    (``shift`` alone reads as ``shift:2``); ``fingerprint()`` goes into the target cache's key."""

    def __init__(self, name, apply):
        self.name, self.apply = name, apply

    def fingerprint(self):
        return f"{self.name}|views-v{VERSION}"

    def __call__(self, images, rows):
        return self.apply(images, np.asarray(rows))

    def __repr__(self):
        return f"View({self.name!r})"


def parse_view(text) -> View:
    """A View from its config spelling; ValueError (runtime.rules.VIEW_RULE) otherwise."""
    name = view_name(text)
    if name == "hflip":
        return View(name, hflip)
    pixels = int(name.partition(":")[2])
    return View(name, lambda images, rows: shift(images, rows, pixels))
