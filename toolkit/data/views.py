"""Cheap augmented views of the images, by name, for averaged teacher targets
(``training.teacher_views``; MEAL V2's averaged soft outputs, test-time augmentation
of the teacher).

A view maps the sources' float images (n, C, H, W) in [0, 1] of rows ``rows`` to the
same shape, before a teacher's preprocessing. Each view is deterministic (a row gets
the same view in every run), so its teacher logits are cached once.

* ``hflip``: mirrored left to right;
* ``shift:N`` (``shift`` alone: N = 2): moved by (dy, dx), each in [-N, N], drawn once
  per row from a fixed seed, the uncovered border filled with 0 (torchvision's
  ``RandomCrop(padding=N)``).

>>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
>>> parse_view("hflip")(x, np.arange(1))[0, 0].tolist()
[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
"""

import numpy as np

SHIFT_SEED = 0
EXPECTED = "expected 'hflip' or 'shift:N' (N a whole number of pixels, 1 to 16)"


def hflip(images, rows):
    return np.ascontiguousarray(images[..., ::-1])


def offsets(rows, pixels):
    """(dy, dx) of each row in ``rows``, each in [-pixels, pixels]; a function of the row alone."""
    span = 2 * pixels + 1
    drawn = np.random.default_rng(SHIFT_SEED).integers(0, span * span, size=int(np.max(rows, initial=0)) + 1)
    code = drawn[np.asarray(rows, dtype=np.int64)]
    return np.stack([code // span, code % span], 1) - pixels


def shift(images, rows, pixels):
    """Each image moved by its row's offsets, zero-filled."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pixels, pixels), (pixels, pixels)))
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets(rows, pixels)):
        out[i] = padded[i, :, pixels - dy: pixels - dy + h, pixels - dx: pixels - dx + w]
    return out


class View:
    """One named view: ``view(images, rows)``; ``name`` is its canonical spelling
    (``shift`` alone reads as ``shift:2``), part of the target cache's key."""

    def __init__(self, name, apply):
        self.name, self.apply = name, apply

    def __call__(self, images, rows):
        return self.apply(images, np.asarray(rows))

    def __repr__(self):
        return f"View({self.name!r})"


def parse_view(text) -> View:
    """A View from its config spelling; ValueError (with :data:`EXPECTED`) otherwise."""
    kind, sep, arg = str(text).partition(":")
    if kind == "hflip" and not sep:
        return View("hflip", hflip)
    if kind == "shift":
        pixels = int(arg) if arg.isdigit() else (2 if not sep else 0)
        if 1 <= pixels <= 16:
            return View(f"shift:{pixels}", lambda images, rows: shift(images, rows, pixels))
    raise ValueError(EXPECTED)
