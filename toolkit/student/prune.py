"""A narrower trunk that starts from the reference teacher's weights (``student.init: pruned``, ours).

Channel pruning by filter importance (Li et al., "Pruning Filters for Efficient
ConvNets", 2017), residual-aware: the trunk's channels fall into groups that
must keep one index set (toolkit.student.channels: a conv's output, everything
an elementwise add joins to it, the skips that carry it on, across block
boundaries). Each group keeps the ``scaled(channels, width)`` channels of
largest importance, the L1 norm of the producing convs' filters (over all their
inputs) summed over the group's producers; a teacher exported to ONNX has its
BatchNorm folded into the convs, so the filters carry the BN scale too. Every
consumer keeps the matching input channels, a depthwise conv and a BatchNorm
their input's. A layer the analysis cannot follow is refused with a ConfigError.

Every producer of a group has the group's channel count, so each conv gets
``scaled(out_channels)`` outputs and ``scaled(in_channels)`` inputs (all of the
image's): the shapes :func:`~amalgam.toolkit.student.width.scale_width` gives, so a saved
student reloads the same way. At width 1.0 every group keeps all its channels,
in order: the teacher's trunk exactly.
"""

import torch
from torch import nn

from amalgam.toolkit.student.channels import channel_groups, depthwise
from amalgam.toolkit.student.width import replace_module, scaled


def _conv(conv, keep_in, keep_out):
    weight = conv.weight[keep_out] if depthwise(conv) else conv.weight[keep_out][:, keep_in]
    new = nn.Conv2d(
        len(keep_in),
        len(keep_out),
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        len(keep_in) if depthwise(conv) else conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias[keep_out])
    return new


def _batchnorm(bn, keep):
    new = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, name) is not None:
                getattr(new, name).copy_(getattr(bn, name)[keep])
    return new


def _kept(group, width):
    """A group's channels to keep: the ``scaled(channels, width)`` of largest summed filter L1 norm
    over its producers, in order; None (all) for the image."""
    if group.image:
        return None
    importance = sum(conv.weight.detach().abs().sum(dim=(1, 2, 3)) for _, _, conv in group.producers)
    return torch.sort(torch.topk(importance, scaled(group.channels, width)).indices).values


def _all(keep, channels):
    return torch.arange(channels) if keep is None else keep


def prune_width(blocks, width):
    """``blocks`` (converted teacher blocks, in order) narrowed to ``width``, one index set per channel group."""
    groups, layers = channel_groups(blocks)
    kept = {g: _kept(group, width) for g, group in groups.items()}
    for layer in layers:
        block, module = blocks[layer.block], layer.module
        if isinstance(module, nn.Conv2d):
            keep_in = _all(kept[layer.group_in], module.in_channels)
            keep_out = keep_in if depthwise(module) else _all(kept[layer.group_out], module.out_channels)
            replace_module(block, layer.target, _conv(module, keep_in, keep_out))
        elif kept[layer.group_in] is not None:
            replace_module(block, layer.target, _batchnorm(module, kept[layer.group_in]))
    return blocks
