"""Adapters where the trunk's feature and a teacher branch's input differ (ours).

METHOD.md, "How this maps onto ONNX teachers": teachers of different widths or
layouts need an adapter at the branch point: a 1x1 conv for channels, a resize
for spatial size, a permute for layout. Shapes are NCHW on the trunk side.
"""

from torch import nn
from torch.nn import functional as F


class Adapter(nn.Module):
    """Maps a trunk feature (N, C, H, W) to a branch input of ``target_shape``.

    ``target_shape`` is (C, H, W) in NCHW order; ``target_layout`` "NHWC" permutes
    the result for branches cut from NHWC graphs.
    """

    def __init__(self, source_channels, target_shape, target_layout="NCHW"):
        super().__init__()
        channels, self.height, self.width = target_shape
        self.project = nn.Conv2d(source_channels, channels, 1) if source_channels != channels else nn.Identity()
        self.nhwc = target_layout == "NHWC"

    def forward(self, h):
        if h.shape[-2:] != (self.height, self.width):
            h = F.interpolate(h, size=(self.height, self.width), mode="bilinear", align_corners=False)
        h = self.project(h)
        return h.permute(0, 2, 3, 1) if self.nhwc else h


def needs_adapter(source_shape, target_shape, target_layout="NCHW"):
    """True unless a (C, H, W) trunk feature feeds the branch as it is."""
    return tuple(source_shape) != tuple(target_shape) or target_layout == "NHWC"


def to_nchw(shape, layout):
    """(C, H, W) of a feature shape given without its batch axis."""
    return (shape[2], shape[0], shape[1]) if layout == "NHWC" else tuple(shape)


def make_adapter(source_shape, target_shape, target_layout="NCHW"):
    if not needs_adapter(source_shape, target_shape, target_layout):
        return nn.Identity()
    return Adapter(source_shape[0], target_shape, target_layout)


