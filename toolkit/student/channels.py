"""Channel groups of a trunk: which tensors' channels must be pruned together (for toolkit.student.prune).

A channel group is a set of tensors whose channels line up one to one, so a
pruned trunk keeps ONE index set for all of them: a convolution's output starts
a group; BatchNorm, activations, pooling and a depthwise convolution keep their
input's; an elementwise add (or mul, sub, div: a residual join, a gate) of two
tensors merges their groups; a block's output and the next block's input are
one group, so a skip that passes a boundary stays in it. The image is a group of
its own that is never pruned.

The analysis walks the converted blocks' torch.fx graphs. A layer whose channel
mapping it cannot follow (concat, reshape, a per-channel constant, other
weights) is refused with a ConfigError naming the block and the layer.
"""

from dataclasses import dataclass, field
from functools import reduce

from torch import nn

from amalgam.runtime.errors import ConfigError
from amalgam.toolkit.student.width import SHAPELESS

ELEMENTWISE = "OnnxBinaryMathOperation"  # onnx2torch's Add / Sub / Mul / Div


@dataclass
class Group:
    """Tensors sharing one channel index set; ``producers``: the (non-depthwise) convs writing it."""

    channels: int = None
    image: bool = False
    producers: list = field(default_factory=list)


@dataclass
class Layer:
    """A convolution or BatchNorm of trunk block ``block`` (0-based) at ``target``, and its groups."""

    block: int
    target: str
    module: nn.Module
    group_in: int
    group_out: int


def depthwise(conv):
    return conv.groups == conv.in_channels and conv.groups > 1


class _Groups:
    """Union-find over group ids."""

    def __init__(self):
        self.parent, self.info = [], []

    def new(self, **kw):
        self.parent.append(len(self.parent))
        self.info.append(Group(**kw))
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b, where):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        ia, ib = self.info[a], self.info[b]
        if ia.image or ib.image or ia.channels != ib.channels:
            raise ConfigError(
                f"student.init: pruned: {where} joins the image's channels or tensors of "
                f"different widths; use init: random"
            )
        self.parent[b] = a
        ia.producers += ib.producers
        return a


def _refuse(index, target, why):
    raise ConfigError(
        f"student.init: pruned: trunk block {index} has a layer {target!r} ({why}) "
        f"whose channels cannot be followed; use init: random"
    )


def _conv(groups, layers, b, node, conv, g_in):
    if depthwise(conv):
        if conv.out_channels != conv.in_channels:
            _refuse(b + 1, node.target, "a depthwise conv with a channel multiplier")
        layers.append(Layer(b, node.target, conv, g_in, g_in))
        return g_in
    if conv.groups != 1:
        _refuse(b + 1, node.target, "a grouped convolution")
    g_out = groups.new(channels=conv.out_channels)
    groups.info[g_out].producers.append((b, node.target, conv))
    layers.append(Layer(b, node.target, conv, g_in, g_out))
    return g_out


def _elementwise(groups, b, node, mapped, block):
    """Merge the groups an elementwise op joins; a constant input must be a scalar."""
    for arg in node.all_input_nodes:
        if arg.name not in mapped:
            if arg.op == "get_attr" and reduce(getattr, arg.target.split("."), block).numel() == 1:
                continue
            _refuse(b + 1, node.target, f"{ELEMENTWISE} with a per-channel or computed input {arg.name!r}")
    first, *rest = [mapped[a.name] for a in node.all_input_nodes if a.name in mapped]
    for g in rest:
        first = groups.union(first, g, f"trunk block {b + 1} layer {node.target!r}")
    return first


def _walk(groups, layers, b, block, g_in):
    """Map every tensor of ``block`` to its group; returns the output's group."""
    modules = dict(block.named_modules())
    mapped = {}
    for node in block.graph.nodes:
        if node.op == "placeholder":
            mapped[node.name] = g_in
            continue
        if node.op == "get_attr":
            continue
        grouped = [mapped[a.name] for a in node.all_input_nodes if a.name in mapped]
        if node.op == "output":
            return grouped[0]
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is None or not grouped:
            if grouped:
                _refuse(b + 1, node.name, f"the function {node.target}")
            continue
        if isinstance(module, nn.Conv2d):
            mapped[node.name] = _conv(groups, layers, b, node, module, grouped[0])
        elif isinstance(module, nn.BatchNorm2d):
            layers.append(Layer(b, node.target, module, grouped[0], grouped[0]))
            mapped[node.name] = grouped[0]
        elif type(module).__name__ == ELEMENTWISE:
            mapped[node.name] = _elementwise(groups, b, node, mapped, block)
        elif isinstance(module, SHAPELESS) and len(grouped) == 1:
            mapped[node.name] = grouped[0]
        else:
            _refuse(b + 1, node.target, type(module).__name__)
    return g_in


def channel_groups(blocks):
    """(groups, layers): each group (by id) and every conv / BatchNorm with its input and output groups."""
    groups, layers = _Groups(), []
    g = groups.new(image=True)
    for b, block in enumerate(blocks):
        g = _walk(groups, layers, b, block, g)
    for layer in layers:
        layer.group_in, layer.group_out = groups.find(layer.group_in), groups.find(layer.group_out)
    roots = {groups.find(i) for i in range(len(groups.parent))}
    return {r: groups.info[r] for r in roots}, layers
