"""ONNX pieces of a teacher (blocks, branches) as trainable torch modules.

The paper's branches are copies of a teacher's layers after a block, trained
further (or frozen) inside the student: :func:`to_torch` turns an ONNX piece into
a ``torch.nn.Module`` with onnx2torch. onnx2torch 1.5.15 stops at opset 17 for
some ops that our exporters emit at 18+ (ReduceMean & co. take their axes as an
input since 18); the converters for them are registered here, once, through
onnx2torch's own registry. Every op is checked up front, so an unsupported graph
fails with one :class:`UnsupportedOpError` that names all its op types and nodes.

Reshape is our own (:class:`StaticReshape`): onnx2torch's tests its target shape
at run time (``torch.any(shape == 0)``), a data-dependent branch that
``torch.export`` refuses, and it refuses ``allowzero=1`` (what the dynamo exporter
writes for every flatten or view). Ours reads the target once, at conversion (a
constant after :func:`~amalgam.runtime.normalize.normalize`), so a converted piece exports
under dynamo with its batch axis symbolic.

Slice with constant starts, ends, axes and steps is our own (:class:`StaticSlice`):
onnx2torch's indexes a tensor with a *list* of slices, which torch deprecates (a
UserWarning on every converted transformer branch: such an index is to become a tensor
index). Ours indexes with a tuple; a Slice whose bounds are computed keeps onnx2torch's.

Gather is our own too (:class:`Take`): under export, onnx2torch's reads a private of
``torch.onnx.symbolic_helper`` that torch 2.14 lacks once torchvision is imported
first, so a ViT branch (it gathers its class token) would not export in such a
process.
"""

import operator

import onnx
import torch
from onnx2torch import convert
from onnx2torch.node_converters import registry
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn

from amalgam.runtime.errors import UnsupportedOpError

# Reductions whose axes moved from an attribute to an input (opset 18; Max/Min 20).
REDUCE_AXES_AS_INPUT = {
    op: (18,)
    for op in ("ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
} | {"ReduceMax": (18, 20), "ReduceMin": (18, 20)}

# (op, new version) -> older version with the same semantics (the new one adds types only).
SAME_AS = {
    ("GreaterOrEqual", 16): 12,
    ("LessOrEqual", 16): 12,
    ("Equal", 19): 13,
    ("Cast", 19): 13,
    ("Cast", 21): 13,
    ("Constant", 19): 13,
    ("Constant", 21): 13,
    ("Identity", 19): 16,
    ("Identity", 21): 16,
    ("Shape", 19): 15,
    ("Shape", 21): 15,
    ("ConstantOfShape", 20): 9,
    ("ConstantOfShape", 21): 9,
    ("Flatten", 21): 13,
    ("Transpose", 21): 13,
    ("Unsqueeze", 21): 13,
    ("IsInf", 20): 10,
    ("IsNaN", 20): 13,
    ("ScatterND", 18): 16,
    ("Pad", 18): 13,
    ("Pad", 19): 13,
    ("Pad", 21): 13,
    ("Resize", 18): 13,
    ("Resize", 19): 13,
    ("AveragePool", 19): 11,
}


def _given(node, index):
    return len(node.input_values) > index and bool(node.input_values[index])


def _limits(node):
    """Why the older converter cannot stand in for ``node`` (None if it can)."""
    a, op = node.attributes, node.operation_type
    if op == "Pad" and (_given(node, 3) or a.get("mode") == "wrap"):
        return "an 'axes' input or mode 'wrap'"
    if op == "Resize" and (
        a.get("antialias", 0)
        or a.get("axes") is not None
        or a.get("keep_aspect_ratio_policy", "stretch") != "stretch"
        or a.get("coordinate_transformation_mode") == "half_pixel_symmetric"
    ):
        return "antialias, axes, keep_aspect_ratio_policy or half_pixel_symmetric"
    if op == "AveragePool" and any(d != 1 for d in a.get("dilations", [])):
        return "dilations"
    if op == "ScatterND" and a.get("reduction") in ("max", "min"):
        return "reduction max/min"
    return None


def _same_as(op, old):
    def converter(node, graph):
        reason = _limits(node)
        if reason:
            raise UnsupportedOpError(f"{op} node {node.name!r} uses {reason}, which no converter handles")
        return get_converter(op, old)(node, graph)

    return converter


def _reduce_axes_input(node, graph):
    """Reduce*-18: constant axes (an input now) -> onnx2torch's static-axes module."""
    axes = None
    if _given(node, 1):
        try:
            axes = get_const_value(node.input_values[1], graph).tolist()
        except KeyError:
            raise UnsupportedOpError(
                f"{node.operation_type} node {node.name!r}: its axes are computed at run time; "
                "expected constant axes (normalize() the model first)"
            ) from None
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module = nn.Identity()
    else:
        module = OnnxReduceStaticAxes(node.operation_type, axes, node.attributes.get("keepdims", 1))
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


class SplitToChunks(nn.Module):
    """Split-18 with ``num_outputs``: chunks of ceil(length / n), the last one smaller."""

    def __init__(self, axis, parts):
        super().__init__()
        self.axis, self.parts = axis, parts

    def forward(self, x):
        return torch.split(x, -(-x.shape[self.axis] // self.parts), dim=self.axis)


def _split18(node, graph):
    if _given(node, 1):
        return get_converter("Split", 13)(node, graph)
    module = SplitToChunks(node.attributes.get("axis", 0), len(node.output_values))
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


# Every Reshape version onnx2torch resolves to (1 takes its shape as an attribute: never seen).
RESHAPE_VERSIONS = (5, 13, 14, 19, 21)
GATHER_VERSIONS = (1, 11, 13)
SLICE_VERSIONS = (10, 11, 13)  # Slice-1 (bounds as attributes) stays onnx2torch's


class StaticReshape(nn.Module):
    """Reshape to a target fixed at conversion: ``copied`` axes take the input's own
    size (a 0 under ``allowzero=0``), the others the target's entry (-1: inferred)."""

    def __init__(self, target, copied):
        super().__init__()
        self.target, self.copied = list(target), set(copied)

    def forward(self, x):
        return torch.reshape(x, [x.shape[i] if i in self.copied else d for i, d in enumerate(self.target)])


def _reshape(node, graph):
    """Reshape-5..21 with a constant target -> :class:`StaticReshape`.

    ``allowzero=0``: a 0 copies the input's size on that axis. ``allowzero=1``: a 0
    is a zero-size axis, which is the same thing whenever the target holds no 0.
    """
    try:
        target = get_const_value(node.input_values[1], graph)
    except KeyError:
        raise UnsupportedOpError(
            f"Reshape node {node.name!r}: its target shape is computed at run time; "
            "expected a constant shape (normalize() the model first, with --input-shape for open dims)"
        ) from None
    target = [int(d) for d in torch.as_tensor(target).reshape(-1).tolist()]
    zero_is_copy = not node.attributes.get("allowzero", 0)
    copied = [i for i, d in enumerate(target) if d == 0 and zero_is_copy]
    module = StaticReshape(target, copied)
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


class Take(nn.Module):
    """ONNX Gather: ``numpy.take(data, indices, axis)``, one code path in and out of export."""

    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def forward(self, data, indices):
        return data[(slice(None),) * (self.axis % data.dim()) + (indices.long(),)]


def _gather(node, graph):
    module = Take(node.attributes.get("axis", 0))
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values, outputs=node.output_values))


class StaticSlice(nn.Module):
    """ONNX Slice with constant bounds: one tuple index; an axis with a negative step is
    flipped and sliced forward (position ``i`` of ``n`` becomes ``n - 1 - i``)."""

    def __init__(self, starts, ends, axes, steps):
        super().__init__()
        self.flips = [a for a, step in zip(axes, steps) if step < 0]
        self.slices = {
            a: slice(-b - 1, -e - 1, -step) if step < 0 else slice(b, e, step)
            for b, e, a, step in zip(starts, ends, axes, steps)
        }

    def forward(self, x):
        if self.flips:
            x = torch.flip(x, dims=self.flips)
        index = [slice(None)] * x.dim()
        for axis, part in self.slices.items():
            index[axis % x.dim()] = part
        return x[tuple(index)]


def _constant_ints(node, graph, index):
    """Input ``index`` of ``node`` as a list of ints; None where it is computed at run time."""
    try:
        return [int(v) for v in torch.as_tensor(get_const_value(node.input_values[index], graph)).reshape(-1).tolist()]
    except KeyError:
        return None


def _slice(onnx2torch_converter):
    def converter(node, graph):
        """Slice-10..13: constant bounds -> :class:`StaticSlice`; computed ones -> onnx2torch's."""
        bounds = [_constant_ints(node, graph, i) if _given(node, i) else None for i in range(1, 5)]
        starts, ends, axes, steps = bounds
        if starts is None or ends is None or any(_given(node, i) and bounds[i - 1] is None for i in (3, 4)):
            return onnx2torch_converter(node, graph)
        axes = axes if axes is not None else list(range(len(starts)))
        module = StaticSlice(starts, ends, axes, steps if steps is not None else [1] * len(starts))
        return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))

    return converter


def _replace(op, version, converter):
    """Register ``converter`` for ``op``-``version``, in place of onnx2torch's own if any.

    onnx2torch's registry refuses a second converter for one key and has no
    public way to remove one, hence the private dict.
    """
    registry._CONVERTER_REGISTRY.pop(registry.OperationDescription(onnx.defs.ONNX_DOMAIN, op, version), None)
    add_converter(operation_type=op, version=version)(converter)


def _has_converter(op, version, domain=""):
    try:
        get_converter(op, version, domain)
    except NotImplementedError:
        return False
    return True


def _register(op, version, converter):
    if not _has_converter(op, version):
        add_converter(operation_type=op, version=version)(converter)


for _op, _versions in REDUCE_AXES_AS_INPUT.items():
    for _v in _versions:
        _register(_op, _v, _reduce_axes_input)
for (_op, _v), _old in SAME_AS.items():
    _register(_op, _v, _same_as(_op, _old))
_register("Split", 18, _split18)
for _v in RESHAPE_VERSIONS:
    _replace("Reshape", _v, _reshape)
for _v in GATHER_VERSIONS:
    _replace("Gather", _v, _gather)
for _v in SLICE_VERSIONS:
    _replace("Slice", _v, _slice(get_converter("Slice", _v)))


def unsupported_ops(model):
    """``{op type: [node names]}`` for the nodes no registered converter handles."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    opsets.setdefault("", opsets.pop("ai.onnx", None))
    missing = {}
    for i, proto in enumerate(model.graph.node):
        node = OnnxNode(proto, unique_name=proto.name or f"{proto.op_type}_{i}")
        version = opsets.get(proto.domain or "")
        ok = version is not None and _has_converter(proto.op_type, version, proto.domain or "")
        if ok and (proto.op_type, _resolved(proto, version)) in SAME_AS:
            ok = _limits(node) is None
        if not ok:
            missing.setdefault(proto.op_type, []).append(node.unique_name)
    return missing


def _resolved(proto, version):
    try:
        return onnx.defs.get_schema(proto.op_type, version, proto.domain or "").since_version
    except Exception:
        return version


def _one_result_per_output(module, outputs):
    """Return one tensor per graph output, in order.

    onnx2torch returns a multi-output node's whole tuple once, whichever of its
    outputs the graph exposes; here each output picks its own item.
    """
    graph = module.graph
    made = {}
    for node in graph.nodes:
        mapping = getattr(module.get_submodule(node.target), "onnx_mapping", None) if node.op == "call_module" else None
        for i, name in enumerate(mapping.outputs if mapping else ()):
            made[name] = (node, i, len(mapping.outputs))
    result = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(result):
        picked = [
            node if count == 1 else graph.call_function(operator.getitem, (node, i))
            for node, i, count in (made[name] for name in outputs)
        ]
    result.args = (picked[0] if len(picked) == 1 else tuple(picked),)
    graph.eliminate_dead_code()
    module.recompile()


def to_torch(model):
    """``model`` (an ONNX piece) as a torch module matching ONNX Runtime; all parameters trainable.

    It comes in eval mode (BatchNormalization uses its running statistics, as ONNX
    Runtime does); ``.train()`` is the trainer's call.
    """
    missing = unsupported_ops(model)
    if missing:
        listed = "; ".join(f"{op} (nodes: {', '.join(names)})" for op, names in missing.items())
        raise UnsupportedOpError(f"graph {model.graph.name!r} has ops no converter handles: {listed}")
    try:
        module = convert(model, attach_onnx_mapping=True)
    except NotImplementedError as e:
        raise UnsupportedOpError(f"graph {model.graph.name!r}: {e}") from e
    _one_result_per_output(module, [o.name for o in model.graph.output])
    for p in module.parameters():
        p.requires_grad_(True)
    return module.eval()
