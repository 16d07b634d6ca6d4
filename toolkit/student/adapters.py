"""Adapters where the trunk's feature and a teacher branch's input differ (ours).

METHOD.md, "How this maps onto ONNX teachers": teachers of different widths or
layouts need an adapter at the branch point: a 1x1 conv for channels, a resize
for spatial size, a permute for layout. Shapes are NCHW on the trunk side.

A teacher other than the one the trunk came from also gets a 1x1 conv when the
widths agree: its channels need not line up with the trunk's. The conv starts as
the least-squares map from the trunk's feature to that teacher's own feature at
the boundary (:func:`fit_adapter`, on cached taps), so the frozen branch sees
nearly what its teacher saw from the first step.

Across families (ours): a ViT teacher's branch takes a token sequence, so its
:class:`TokenAdapter` projects and resizes the trunk's map to the ViT's patch grid and
lays it out as patch tokens, the inverse of runtime.tokens.tokens_to_map, beside the
extra (class, register) tokens made from the pooled map.
"""

import torch
from torch import nn
from torch.nn import functional as F

from amalgam.runtime.tokens import extra_rows, tokens_to_map


class Adapter(nn.Module):
    """Maps a trunk feature (N, C, H, W) to a branch input of ``target_shape``.

    ``target_shape`` is (C, H, W) in NCHW order; ``target_layout`` "NHWC" permutes
    the result for branches cut from NHWC graphs.
    """

    def __init__(self, source_channels, target_shape, target_layout="NCHW", project=False):
        super().__init__()
        channels, self.height, self.width = target_shape
        project = project or source_channels != channels
        self.project = nn.Conv2d(source_channels, channels, 1) if project else nn.Identity()
        self.nhwc = target_layout == "NHWC"

    def resize(self, h):
        return resize_to(h, (self.height, self.width))

    def forward(self, h):
        h = self.project(self.resize(h))
        return h.permute(0, 2, 3, 1) if self.nhwc else h


class TokenAdapter(Adapter):
    """Maps a trunk feature (N, C, H, W) to a ViT branch's tokens (N, extra + h*w, D).

    ``target_shape`` is the patch grid's map (D, h, w); the map, projected and resized
    to it, is flattened row by row into the patch tokens, and ``extra_tokens`` tokens
    come from its global average pool through a linear layer (the class token "pooled",
    least-squares started like the conv), at the ``extra_at`` end of the sequence.
    """

    def __init__(self, source_channels, target_shape, extra_tokens, extra_at):
        super().__init__(source_channels, target_shape, "NCHW", project=True)
        self.dim, self.grid = target_shape[0], tuple(target_shape[1:])
        self.extra_tokens, self.extra_at = extra_tokens, extra_at
        self.extra = nn.Linear(self.dim, extra_tokens * self.dim) if extra_tokens else None

    def to_map(self, h):
        return self.project(self.resize(h))

    def forward(self, h):
        grid = self.to_map(h)
        patches = grid.flatten(2).transpose(1, 2)
        if self.extra is None:
            return patches
        extra = self.extra(grid.mean(dim=(2, 3))).reshape(grid.shape[0], self.extra_tokens, self.dim)
        return torch.cat((extra, patches) if self.extra_at == "start" else (patches, extra), dim=1)


def resize_to(h, size):
    """An NCHW feature at spatial ``size`` (H, W): bilinear where it differs, else as it is."""
    if tuple(h.shape[-2:]) != tuple(size):
        h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=False)
    return h


def needs_adapter(source_shape, target_shape, target_layout="NCHW", project=False):
    """True unless a (C, H, W) trunk feature feeds the branch as it is."""
    return project or tuple(source_shape) != tuple(target_shape) or target_layout == "NHWC"


def to_nchw(shape, layout):
    """(C, H, W) of a feature shape given without its batch axis."""
    return (shape[2], shape[0], shape[1]) if layout == "NHWC" else tuple(shape)


def make_adapter(source_shape, target_shape, target_layout="NCHW", project=False, extra=None):
    """The adapter from a (C, H, W) trunk feature to a branch input: ``target_layout``
    "tokens" (``extra``: [extra tokens, where]) for a ViT branch, always projected (a
    ViT's token dim need not line up with the trunk's channels), else a map's layout."""
    if target_layout == "tokens":
        return TokenAdapter(source_shape[0], target_shape, *extra)
    if not needs_adapter(source_shape, target_shape, target_layout, project):
        return nn.Identity()
    return Adapter(source_shape[0], target_shape, target_layout, project)


@torch.no_grad()
def fit_adapter(adapter, features, targets, ridge=1e-3):
    """Set the 1x1 conv to the ridge least-squares map ``features -> targets``.

    ``features``: trunk features (N, C, H, W); ``targets``: the teacher's taps at
    the same boundary, in the branch's layout. Pixels are the samples. A
    :class:`TokenAdapter`'s conv is fit to the taps' patch tokens as a map, then its
    extra tokens' linear layer to the taps' extra tokens, from the pooled fitted map.
    """
    if not isinstance(adapter, Adapter) or not isinstance(adapter.project, nn.Conv2d):
        return
    tokens = targets if isinstance(adapter, TokenAdapter) else None
    if tokens is not None:
        targets = tokens_to_map(tokens, adapter)
    x = adapter.resize(features).permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    y = (targets if adapter.nhwc else targets.permute(0, 2, 3, 1)).reshape(x.shape[0], -1)
    _set_linear(adapter.project, x, y, ridge)
    if tokens is not None and adapter.extra is not None:
        pooled = adapter.to_map(features).mean(dim=(2, 3))
        _set_linear(adapter.extra, pooled, tokens[:, extra_rows(adapter)].reshape(len(pooled), -1), ridge)


def _set_linear(layer, x, y, ridge):
    """A 1x1 conv's or linear layer's weight and bias: the ridge least-squares map ``x -> y`` (rows: samples)."""
    x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64, device=x.device)], 1)
    gram = x1.T @ x1
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=x1.dtype, device=x.device)
    solution = torch.linalg.solve(gram, x1.T @ y.double())
    layer.weight.copy_(solution[:-1].T.reshape(layer.weight.shape).to(layer.weight.dtype))
    layer.bias.copy_(solution[-1].to(layer.bias.dtype))
