"""Adapters where the trunk's feature and a teacher branch's input differ (ours).

METHOD.md, "How this maps onto ONNX teachers": teachers of different widths or
layouts need an adapter at the branch point: a 1x1 conv for channels, a resize
for spatial size, a permute for layout. Shapes are NCHW on the trunk side.

A teacher other than the one the trunk came from also gets a 1x1 conv when the
widths agree: its channels need not line up with the trunk's. The conv starts as
the least-squares map from the trunk's feature to that teacher's own feature at
the boundary (:func:`fit_adapter`, on cached taps), so the frozen branch sees
nearly what its teacher saw from the first step.
"""

import torch
from torch import nn
from torch.nn import functional as F


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


def make_adapter(source_shape, target_shape, target_layout="NCHW", project=False):
    if not needs_adapter(source_shape, target_shape, target_layout, project):
        return nn.Identity()
    return Adapter(source_shape[0], target_shape, target_layout, project)


@torch.no_grad()
def fit_adapter(adapter, features, targets, ridge=1e-3):
    """Set the 1x1 conv to the ridge least-squares map ``features -> targets``.

    ``features``: trunk features (N, C, H, W); ``targets``: the teacher's taps at
    the same boundary, in the branch's layout. Pixels are the samples.
    """
    if not isinstance(adapter, Adapter) or not isinstance(adapter.project, nn.Conv2d):
        return
    x = adapter.resize(features).permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    y = (targets if adapter.nhwc else targets.permute(0, 2, 3, 1)).reshape(x.shape[0], -1).double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    gram = x1.T @ x1
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=x.dtype)
    solution = torch.linalg.solve(gram, x1.T @ y)
    conv = adapter.project
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape).to(conv.weight.dtype))
    conv.bias.copy_(solution[-1].to(conv.bias.dtype))
