"""Lining up teachers of different architectures block by block, by stride (ours).

METHOD.md: teachers of one architecture line up block by block; the trunk's block
``l`` feeds every teacher's layers after that teacher's boundary ``l``. A ResNet-18
(4 stage ends), a RegNet (a stem and 4 stages) and a MobileNet (14 candidates) do
not have the same number of boundaries, but they all halve the image at the same
places. So each boundary of the *reference* teacher (the one the trunk comes from)
is paired with the other teacher's boundary at the same spatial *stride* (image size
/ feature size): the LAST tensor at that resolution, a stage end, where the other
teacher has done all it does at that scale.

* Same architecture: when both lists have the same strides in the same order,
  boundary ``l`` pairs with boundary ``l`` (one to one, as before).
* No boundary at the reference's stride (e.g. the reference's stride-2 stem against
  a ResNet whose first boundary is at stride 4): the other teacher's nearest
  *coarser* stride, its last tensor there. The trunk feature is then resized down to
  that boundary's size by the branch's adapter (toolkit.student.adapters), and the branch
  skips the other teacher's layers at the finer scale.
* No boundary at that stride or coarser (the other teacher stops at a finer scale):
  :class:`BoundaryError`, one line naming both teachers and their strides.

Across families (ours): a ViT's ``tokens`` boundaries (its encoder layers,
runtime.blocks) are feature maps at stride = patch size once their patch tokens are
reshaped to the patch grid (runtime.tokens), so stride is measured on the grid. But
every encoder layer sits at that one stride, so stride cannot choose among them:
against a teacher whose boundaries are all token sequences, reference block ``l`` of
``L`` pairs with encoder layer ``ceil(l * K / L)`` of ``K`` (:func:`by_depth`, the same
relative depth; the last block with the last layer), and the trunk feature is resized
to the patch grid where its stride differs (down where finer, up where coarser). The
reference itself must give feature maps (:func:`require_maps`): the student's trunk is
cut from a CNN teacher.

Strides are rounded to the nearest power of two (a padded 3x3 stride-2 convolution
gives ``ceil(n / 2)``, so a 48-pixel image's stride-32 map is 2 pixels wide). A
boundary whose layout is unknown is read as NCHW, as the adapters do.
"""

import math
from dataclasses import dataclass

from amalgam.runtime.blocks import Boundary, layouts, tensor_shapes
from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.graph import data_inputs
from amalgam.runtime.taps import infer_shapes
from amalgam.runtime.tokens import require_grid, summary


@dataclass(frozen=True)
class Pairing:
    """One row of an alignment table: reference block ``block`` (1-based) and the
    other teacher's boundary that its branch starts from."""

    block: int
    reference: Boundary
    reference_stride: int
    other: Boundary
    other_stride: int

    @property
    def resized(self):
        """True when the trunk feature must be resized for the other teacher's branch."""
        return spatial_size(self.reference) != spatial_size(self.other)

    @property
    def adapter(self):
        """How the trunk's map meets a token boundary (None for a feature map)."""
        if self.other.kind != "tokens":
            return None
        h, w = self.other.grid
        extra = f" + {self.other.extra_tokens} extra at the {self.other.extra_at}" if self.other.extra_tokens else ""
        return f"map -> tokens: {channels(self.other)}x{h}x{w} as {h * w} patches{extra}"

    def to_dict(self):
        return {
            "block": self.block,
            "reference": _side(self.reference, self.reference_stride),
            "other": _side(self.other, self.other_stride),
            "adapter": self.adapter,
        }


def _side(boundary, stride):
    """One teacher's side of an alignment row (a token boundary with its grid and extra tokens)."""
    side = {"name": boundary.name, "kind": boundary.kind, "stride": stride}
    side |= {"channels": channels(boundary), "size": spatial_size(boundary)}
    if boundary.kind == "tokens":
        side |= {"grid": list(boundary.grid), "extra_tokens": boundary.extra_tokens, "extra_at": boundary.extra_at}
    return side


def spatial_size(boundary):
    """(H, W) of a rank-4 boundary, read in its layout, or a token boundary's patch grid;
    None where a dim is open."""
    if boundary.kind == "tokens":
        return boundary.grid
    if len(boundary.shape or []) != 4:
        return None
    h, w = (
        (boundary.shape[1], boundary.shape[2]) if boundary.layout == "NHWC" else (boundary.shape[2], boundary.shape[3])
    )
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def channels(boundary):
    """Channels of a feature map; a token sequence's dim."""
    if boundary.kind == "tokens":
        return boundary.shape[2] if isinstance(boundary.shape[2], int) else None
    if len(boundary.shape or []) != 4:
        return None
    c = boundary.shape[3] if boundary.layout == "NHWC" else boundary.shape[1]
    return c if isinstance(c, int) else None


def stride(boundary, image_size):
    """The boundary's spatial stride against an (H, W) image, a power of two."""
    size = spatial_size(boundary)
    if size is None:
        raise BoundaryError(
            f"boundary {boundary.name!r} has no fixed spatial size ({boundary.shape}); "
            f"give the model a fixed input size (preprocess.size, or inspect --input-shape)"
        )
    ratio = math.sqrt(image_size[0] / size[0] * image_size[1] / size[1])
    return 2 ** max(0, round(math.log2(ratio)))


def image_size(model):
    """(H, W) of the model's image input (its first rank-4 data input), read in its layout."""
    inferred = infer_shapes(model)
    shapes = tensor_shapes(inferred)
    layout = layouts(inferred, shapes)
    for name in data_inputs(inferred):
        shape = shapes.get(name) or []
        if len(shape) == 4:
            h, w = (shape[1], shape[2]) if layout.get(name) == "NHWC" else (shape[2], shape[3])
            if isinstance(h, int) and isinstance(w, int):
                return h, w
            raise BoundaryError(
                f"graph {model.graph.name!r}: input {name!r} has an open spatial size {shape}; "
                f"give it a fixed size to line its boundaries up by stride"
            )
    raise BoundaryError(f"graph {model.graph.name!r}: no rank-4 image input to measure boundary strides against")


def image_size_or_none(model):
    """:func:`image_size`, or None for a graph without a fixed-size image input."""
    try:
        return image_size(model)
    except BoundaryError:
        return None


def align(reference, reference_image, other, other_image, names=("reference", "other")):
    """Pair each reference boundary with one of ``other``'s boundaries (module docstring).

    ``reference``, ``other``: Boundary lists in graph order; ``*_image``: each
    teacher's (H, W) input size; ``names``: the two teachers, for the error message.
    Returns one :class:`Pairing` per reference boundary.
    """
    require_maps(reference, names[0])
    require_grid(other, names[1])
    ref_strides = [stride(b, reference_image) for b in reference]
    other_strides = [stride(b, other_image) for b in other]
    if other and all(b.kind == "tokens" for b in other):
        return by_depth(reference, ref_strides, other, other_strides)
    if ref_strides == other_strides:
        return in_order(reference, reference_image, other, other_image, names)
    last = {s: b for b, s in zip(other, other_strides)}  # the last boundary at each stride
    rows = []
    for block, (boundary, s) in enumerate(zip(reference, ref_strides), start=1):
        coarser = [t for t in sorted(last) if t >= s]
        if not coarser:
            raise BoundaryError(
                f"teachers {names[0]!r} and {names[1]!r} do not line up: {names[0]!r} block {block} "
                f"({boundary.name!r}) ends at stride {s}, and {names[1]!r} has no boundary at stride {s} or "
                f"coarser (strides: {names[0]} {_listed(ref_strides)}; {names[1]} {_listed(other_strides)}); "
                f"name teachers[].boundaries by hand, or pick the shallower teacher as student.reference"
            )
        rows.append(Pairing(block, boundary, s, last[coarser[0]], coarser[0]))
    return rows


def by_depth(reference, ref_strides, other, other_strides):
    """Reference block ``l`` of ``L`` with ``other``'s boundary ``ceil(l * K / L)`` of ``K``:
    the same relative depth (a ViT's encoder layers, all at its patch stride)."""
    blocks, layers = len(reference), len(other)
    picked = [-(-block * layers // blocks) - 1 for block in range(1, blocks + 1)]
    return [
        Pairing(block, r, s, other[i], other_strides[i])
        for block, (r, s, i) in enumerate(zip(reference, ref_strides, picked), start=1)
    ]


def require_maps(boundaries, teacher):
    """Raise unless every boundary of the reference ``teacher`` is a feature map: a
    student's trunk is cut from a CNN teacher (a ViT teaches it through its tokens)."""
    tokens = [b.name for b in boundaries if b.kind == "tokens"]
    if tokens:
        raise BoundaryError(
            f"teacher {teacher!r}: its {len(tokens)} boundaries ({tokens[0]!r}, ...) are token sequences "
            f"(a transformer's encoder layers), and a student's trunk is cut from feature maps only: make a CNN "
            f"teacher the reference (student.reference, or the first model to inspect); a ViT then teaches "
            f"the CNN trunk through its token features"
        )


def in_order(reference, reference_image, other, other_image, names=("reference", "other")):
    """Boundary ``l`` with boundary ``l`` (same architecture, or boundaries named by
    hand: there a stride that cannot be measured is None)."""
    require_maps(reference, names[0])
    require_grid(other, names[1])

    def known(b, image):
        return stride(b, image) if image and spatial_size(b) else None

    return [
        Pairing(i, r, known(r, reference_image), o, known(o, other_image))
        for i, (r, o) in enumerate(zip(reference, other), start=1)
    ]


def _listed(strides):
    return ", ".join(map(str, strides)) or "(none)"


def table(rows, names=("reference", "other")):
    """The alignment as text lines, one per reference block."""

    def cell(b, s):
        if b.kind == "tokens":
            return f"{b.name} ({summary(b)})"
        return f"{b.name} (stride {s or '?'}, {channels(b) or '?'} ch)"

    width = max([len(cell(r.reference, r.reference_stride)) for r in rows] + [len(names[0])])
    lines = [f"  {'#':>2}  {names[0]:<{width}}  {names[1]}"]
    for r in rows:
        notes = [n for n in ("resized" if r.resized else None, r.adapter) if n]
        note = f"  ({', '.join(notes)})" if notes else ""
        lines.append(
            f"  {r.block:>2}  {cell(r.reference, r.reference_stride):<{width}}  {cell(r.other, r.other_stride)}{note}"
        )
    return lines
