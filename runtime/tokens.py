"""A transformer's token sequence read as a feature map (ours).

The paper's students and teachers share one family: a branch starts from the trunk's
feature map. A ViT's block boundary is a token sequence ``[B, N, D]`` instead
(runtime.blocks): ``extra_tokens`` class, distillation or register tokens at one end
(``extra_at``), then the ``h * w`` patch tokens of its patch grid, row by row, as its
patch embedding flattens the ``[B, D, h, w]`` map of its stride-``patch`` Conv. So
the patch tokens are that map again: :func:`tokens_to_map` drops the extra tokens and
reshapes the rest to ``[B, D, h, w]``, a feature map at stride = patch size that
lines up with a CNN's map at the same stride (runtime.align).
"""

from amalgam.runtime.errors import BoundaryError


def readable(boundary):
    """True for a feature map, and for a token sequence whose patch grid and extra tokens
    the graph tells (what :func:`tokens_to_map` needs)."""
    return boundary.kind != "tokens" or None not in (boundary.grid, boundary.extra_tokens, boundary.extra_at)


def require_grid(boundaries, teacher):
    """Raise unless every token boundary of ``teacher`` is :func:`readable`."""
    for boundary in boundaries:
        if readable(boundary):
            continue
        raise BoundaryError(
            f"teacher {teacher!r}: token boundary {boundary.name!r} {boundary.shape}: its patch grid is not "
            f"known from the graph (expected a patch-embedding Conv whose h*w patches, plus learned tokens "
            f"concatenated at one end, make up the sequence)"
        )


def patch_rows(boundary):
    """The slice of a token sequence that holds the patch tokens (``boundary``: a token
    Boundary, or anything with its ``grid``, ``extra_tokens`` and ``extra_at``)."""
    n = boundary.grid[0] * boundary.grid[1]
    return slice(boundary.extra_tokens, None) if boundary.extra_at == "start" else slice(0, n)


def extra_rows(boundary):
    """The slice of a token sequence that holds the extra (class, register...) tokens."""
    n = boundary.grid[0] * boundary.grid[1]
    return slice(0, boundary.extra_tokens) if boundary.extra_at == "start" else slice(n, None)


def tokens_to_map(tokens, boundary):
    """``[B, N, D]`` tokens at ``boundary`` as the ``[B, D, h, w]`` map of its patch tokens
    (a numpy array or a torch tensor alike)."""
    patches = tokens[:, patch_rows(boundary)]
    return patches.swapaxes(1, 2).reshape(tokens.shape[0], tokens.shape[2], *boundary.grid)


def summary(boundary):
    """A token boundary in a few words: ``tokens 1+8x8, stride 4, 32 dim``."""
    h, w = boundary.grid or ("?", "?")
    extra = f"{boundary.extra_tokens}+" if boundary.extra_tokens else ""
    return f"tokens {extra}{h}x{w}, stride {boundary.stride or '?'}, {boundary.shape[2]} dim"
