"""A narrower trunk that starts from the reference teacher's weights (``student.init: pruned``, ours).

Channel pruning by filter importance (Li et al., "Pruning Filters for Efficient
ConvNets", 2017): each convolution keeps the ``round(width x channels)`` output
channels whose filters have the largest L1 norm, and every later layer keeps the
matching input channels, across block boundaries. BatchNorm layers follow their
input's channels; layers without per-channel weights pass them through.

The walk follows the converted blocks' torch.fx graphs node by node, so it
handles chains of convolutions; where two tensors with different kept channels
meet (a residual add), it refuses with a ConfigError. The result has the shapes
:func:`toolkit.student.width.scale_width` gives, so a saved student reloads the same way.
"""

import torch
from torch import nn

from runtime.errors import ConfigError
from toolkit.student.width import SHAPELESS, replace_module, scaled


def _conv(conv, keep_in, keep_out):
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    weight = conv.weight[keep_out] if depthwise else conv.weight[keep_out][:, keep_in]
    new = nn.Conv2d(len(keep_in), len(keep_out), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    len(keep_in) if depthwise else conv.groups, conv.bias is not None, conv.padding_mode)
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


def _important(conv, width, keep_in):
    """Output channels to keep: the filters of largest L1 norm (over the kept inputs), in order."""
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    if depthwise:
        return keep_in
    if conv.groups != 1:
        raise ConfigError("student.init: pruned: grouped convolutions are not supported; use init: random")
    norms = conv.weight[:, keep_in].abs().sum(dim=(1, 2, 3))
    k = scaled(conv.out_channels, width)
    return torch.sort(torch.topk(norms, k).indices).values


def _prune_block(block, width, keep, index):
    """Prune ``block`` in place; ``keep``: its input's kept channels (None: all); returns its output's."""
    modules = dict(block.named_modules())
    kept = {}
    for node in block.graph.nodes:
        inputs = [kept[a.name] for a in node.all_input_nodes if a.name in kept]
        if node.op == "placeholder":
            kept[node.name] = keep
            continue
        if node.op == "output":
            return inputs[0] if inputs else keep
        module = modules.get(node.target) if node.op == "call_module" else None
        first = inputs[0] if inputs else None
        if isinstance(module, nn.Conv2d):
            keep_in = torch.arange(module.in_channels) if first is None else first
            keep_out = _important(module, width, keep_in)
            replace_module(block, node.target, _conv(module, keep_in, keep_out))
            kept[node.name] = keep_out
        elif isinstance(module, nn.BatchNorm2d):
            if first is not None:
                replace_module(block, node.target, _batchnorm(module, first))
            kept[node.name] = first
        elif module is not None and not isinstance(module, SHAPELESS) and any(True for _ in module.parameters()):
            raise ConfigError(f"student.init: pruned: trunk block {index} has a layer {node.target!r} "
                              f"({type(module).__name__}) whose weights cannot be pruned; use init: random")
        else:
            distinct = {tuple(k.tolist()) if k is not None else None for k in inputs}
            if len(distinct) > 1:
                raise ConfigError(f"student.init: pruned: trunk block {index} joins tensors with different "
                                  f"kept channels at {node.name!r} (a residual add); use init: random")
            kept[node.name] = first
    return keep


def prune_width(blocks, width):
    """``blocks`` (converted teacher blocks, in order) narrowed to ``width`` by filter L1 norm."""
    if width == 1.0:
        return blocks
    keep = None
    for index, block in enumerate(blocks, start=1):
        keep = _prune_block(block, width, keep, index)
    return blocks
