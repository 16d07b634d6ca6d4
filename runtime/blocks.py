"""Block boundaries: where a teacher's graph can be cut into blocks.

In the paper the student's trunk is grown block by block and each teacher's layers
after block b become a branch. Here a *block boundary* is a tensor of the teacher's
ONNX graph that every path from the image to the outputs goes through (it
*dominates* the outputs, so cutting there leaves nothing behind): a residual skip,
a squeeze-and-excitation side path or a shape sub-graph jumps over the tensors
inside it, so those never qualify.

:func:`find_boundaries` proposes the ends of stages of a CNN-like graph: rank-4
dominators made by an activation or a pooling op, where the feature map changes
shape next (or none follows: the last map before global pooling).
"""

from dataclasses import dataclass

from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.graph import consumers, data_inputs, dims, node_inputs
from amalgam.runtime.taps import infer_shapes, require_tensor

ACTIVATIONS = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "HardSwish",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "Mish",
    "Softplus",
    "ThresholdedRelu",
}
GATES = {"Sigmoid", "HardSigmoid"}  # x * sigmoid(.): swish and squeeze-and-excitation
POOLS = {"MaxPool", "AveragePool", "LpPool"}
SHAPE_ONLY = {"Shape", "Size"}  # their outputs carry the input's shape, not its values
NCHW_OPS = POOLS | {
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "InstanceNormalization",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LRN",
    "DepthToSpace",
    "SpaceToDepth",
}
LAYOUT_KEEPING = (
    ACTIVATIONS
    | GATES
    | {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Sum",
        "Max",
        "Min",
        "Identity",
        "Dropout",
        "Concat",
        "Pad",
        "Cast",
        "Tanh",
        "Neg",
        "Abs",
        "Sqrt",
        "Exp",
        "Log",
        "Reciprocal",
        "Pow",
    }
)


@dataclass
class Boundary:
    """A block boundary: tensor ``name`` with ``shape`` (None/str for open dims)."""

    name: str
    shape: list
    layout: str  # "NCHW", "NHWC" or "unknown"


def reachable(model, blocked=None):
    """Tensors that carry data from the graph inputs, not passing through ``blocked``.

    Constant-only paths do not count, nor do Shape/Size outputs (they carry the
    input's shape, not its values).
    """
    reach = {n for n in data_inputs(model) if n != blocked}
    for node in model.graph.node:
        if node.op_type in SHAPE_ONLY or not any(n in reach for n in node_inputs(node)):
            continue
        reach.update(o for o in node.output if o and o != blocked)
    return reach


def dominates_outputs(model, name):
    """True iff every data path from the graph inputs to every graph output passes ``name``."""
    reach = reachable(model)
    outputs = [o.name for o in model.graph.output if o.name in reach]
    if name not in reach or not outputs:
        return False
    blocked = reachable(model, blocked=name)
    return not any(o in blocked for o in outputs)


def tensor_shapes(inferred):
    """Each tensor's shape in an inferred graph: ints, dim names, or None for open dims."""
    graph = inferred.graph
    shapes = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = dims(vi, symbolic=True)
        if shape is not None:
            shapes[vi.name] = shape
    return shapes


def _perm(node):
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _input_layout(model, name, shape):
    consumers = [n for n in model.graph.node if name in n.input]
    if any(n.op_type in NCHW_OPS for n in consumers):
        return "NCHW"
    if any(n.op_type == "Transpose" and _perm(n) == [0, 3, 1, 2] for n in consumers):
        return "NHWC"
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "NCHW"
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "NHWC"
    return None


def layouts(model, shapes):
    """Axis letters of each rank-4 tensor, as far as they can be followed."""
    layout = {n: _input_layout(model, n, shapes[n]) for n in data_inputs(model) if len(shapes.get(n) or []) == 4}
    for node in model.graph.node:
        outs = [o for o in node.output if len(shapes.get(o) or []) == 4]
        if node.op_type in NCHW_OPS:
            found = "NCHW"
        elif node.op_type == "Transpose":
            src, perm = layout.get(node.input[0]), _perm(node)
            found = "".join(src[p] for p in perm) if src and perm and len(perm) == 4 else None
        elif node.op_type in LAYOUT_KEEPING:
            found = next((layout[n] for n in node.input if layout.get(n)), None)
        else:
            found = None
        for out in outs:
            layout[out] = found
    return layout


def _is_candidate_op(node, producer, reach):
    if node.op_type in ACTIVATIONS or node.op_type in POOLS:
        return True
    if node.op_type == "Mul":
        return any(producer.get(n) is not None and producer[n].op_type in GATES for n in node.input)
    if node.op_type == "Add":  # a residual join: both operands carry data
        return all(n in reach for n in node.input)
    return False


def find_boundaries(model):
    """Candidate block boundaries of a CNN-like graph, in graph order."""
    inferred = infer_shapes(model)
    shapes = tensor_shapes(inferred)
    layout = layouts(inferred, shapes)
    producer = {o: n for n in inferred.graph.node for o in n.output}
    reach = reachable(inferred)
    candidates = [
        node.output[0]
        for node in inferred.graph.node
        if _is_candidate_op(node, producer, reach) and len(shapes.get(node.output[0]) or []) == 4
    ]
    candidates = [c for c in candidates if dominates_outputs(inferred, c)]
    pooled = set(candidates)
    candidates = [c for c in candidates if not _feeds_only_pooling(inferred, c, pooled)]
    ends = [
        c
        for i, c in enumerate(candidates)
        if i + 1 == len(candidates) or shapes[candidates[i + 1]][1:] != shapes[c][1:]
    ]
    return [Boundary(c, shapes[c], _layout_name(layout.get(c))) for c in ends]


def _feeds_only_pooling(model, name, candidates):
    """An activation immediately followed by pooling: only the pooled map is a boundary."""
    readers = consumers(model, name)
    return len(readers) == 1 and readers[0].op_type in POOLS and readers[0].output[0] in candidates


def _layout_name(letters):
    return letters if letters in ("NCHW", "NHWC") else "unknown"


def describe(model, names):
    """Boundaries for tensors the user named (shape and layout as for found ones)."""
    inferred = infer_shapes(model)
    shapes = tensor_shapes(inferred)
    layout = layouts(inferred, shapes)
    return [Boundary(n, shapes.get(n), _layout_name(layout.get(n))) for n in names]


def check_boundary(model, name):
    """Raise unless ``name`` is a tensor on the main path (it dominates the outputs)."""
    require_tensor(model, name, what="boundary")
    if not dominates_outputs(model, name):
        valid = [b.name for b in find_boundaries(model)]
        raise BoundaryError(
            f"boundary {name!r} is not on the main path of graph {model.graph.name!r}: a skip connection, "
            f"side path or shape sub-graph goes around it; valid boundaries: {', '.join(valid) or '(none found)'}"
        )
