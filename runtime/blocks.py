"""Block boundaries: where a teacher's graph can be cut into blocks.

In the paper the student's trunk is grown block by block and each teacher's layers
after block b become a branch. Here a *block boundary* is a tensor of the teacher's
ONNX graph that every path from the image to the outputs goes through (it
*dominates* the outputs, so cutting there leaves nothing behind): a residual skip,
a squeeze-and-excitation side path or a shape sub-graph jumps over the tensors
inside it, so those never qualify.

:func:`find_boundaries` proposes the ends of stages of a CNN-like graph: rank-4
dominators made by an activation or a pooling op, where the feature map changes
shape next (or none follows: the last map before global pooling). These are
``map`` boundaries.

A transformer's encoder layers keep one shape, a token sequence ``[B, N, D]``, so
it has no such stage end; its ``tokens`` boundaries are the ends of its encoder
layers (:func:`token_boundaries`), told by graph facts alone: a rank-3 dominator
made by a residual Add of two data tensors of that shape, closing a sub-block
without attention (no Softmax since the previous residual Add: the feed-forward
residual that ends a layer, not the attention residual inside it). Cutting there
keeps every layer whole, attention and MLP, as torchvision's ``EncoderBlock``
returns it. The sequence's layout comes from the patch embedding before the first
layer: the last Conv there gives the patch grid and stride, and a Concat along the
tokens of a learned parameter expanded to the batch (it carries no image data)
gives the ``extra_tokens`` (class, distillation or register tokens) set beside the
``grid_h * grid_w`` patch tokens, and the Concat's input order says where they sit
(``extra_at``: before the patch tokens, ``"start"``, or after them, ``"end"``).
"""

from dataclasses import dataclass

from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.graph import consumers, data_inputs, dims, node_inputs, upstream
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
ATTENTION = {"Softmax", "Attention", "MultiHeadAttention"}  # token mixing (Attention: opset 23, com.microsoft)
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
    """A block boundary: tensor ``name`` with ``shape`` (None/str for open dims).

    ``kind``: ``"map"``, a feature map ``[B, C, H, W]`` (or NHWC), or ``"tokens"``, a
    token sequence ``[B, N, D]`` whose ``N`` is ``grid`` (h, w) patches of ``stride``
    pixels plus ``extra_tokens`` at the ``extra_at`` end of the sequence (``"start"`` or
    ``"end"``; None where the graph does not tell them).
    """

    name: str
    shape: list
    layout: str  # "NCHW", "NHWC" or "unknown" (always, for tokens)
    kind: str = "map"
    grid: tuple | None = None
    stride: int | None = None
    extra_tokens: int | None = None
    extra_at: str | None = None


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
    """Candidate block boundaries of a teacher's graph, in graph order: the stage ends
    of a CNN-like graph (``map``) and the encoder-layer ends of a transformer (``tokens``)."""
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
    found = [Boundary(c, shapes[c], _layout_name(layout.get(c))) for c in ends]
    found += token_boundaries(inferred, shapes, reach)
    order = {o: i for i, n in enumerate(inferred.graph.node) for o in n.output}
    return sorted(found, key=lambda b: order[b.name])


def token_boundaries(inferred, shapes, reach):
    """The ends of a transformer's encoder layers (module docstring), in graph order."""
    joins = [n.output[0] for n in inferred.graph.node if _is_token_join(n, shapes, reach)]
    joins = [j for j in joins if dominates_outputs(inferred, j)]
    nodes = list(inferred.graph.node)
    ends = [j for i, j in enumerate(joins) if not _has_attention(nodes, j, joins[i - 1] if i else None)]
    if not ends:
        return []
    layout = _token_layout(inferred, shapes, reach, ends[0])
    return [Boundary(e, shapes[e], "unknown", "tokens", *layout) for e in ends]


def _is_token_join(node, shapes, reach):
    """A residual Add of two data tensors of one ``[B, N, D]`` shape."""
    if node.op_type != "Add" or len(shapes.get(node.output[0]) or []) != 3:
        return False
    operands = [shapes.get(n) or [] for n in node.input]
    return all(n in reach for n in node.input) and all(s[1:] == shapes[node.output[0]][1:] for s in operands)


def _has_attention(nodes, end, start):
    """True iff an attention op computes ``end`` after ``start`` (None: from the inputs)."""
    inside = upstream(nodes, end) - (upstream(nodes, start) if start else set())
    return any(n.op_type in ATTENTION and set(n.output) & inside for n in nodes)


def _token_layout(inferred, shapes, reach, first):
    """(grid, stride, extra tokens, where they sit) of the sequence ``first``, from the
    patch embedding before it: its last Conv and the token Concats; Nones where ``N``
    does not add up or the extra tokens sit on both sides of the patch tokens."""
    unknown = None, None, None, None
    before = upstream(inferred.graph.node, first)
    made = [n for n in inferred.graph.node if set(n.output) & before]
    convs = [n for n in made if n.op_type == "Conv" and len(shapes.get(n.output[0]) or []) == 4]
    if not convs:
        return unknown
    grid = tuple(shapes[convs[-1].output[0]][2:])
    strides = next((list(a.ints) for a in convs[-1].attribute if a.name == "strides"), [1, 1])
    learned = [_learned_tokens(n, shapes, reach) for n in made if n.op_type == "Concat"]
    extra = sum(rows for rows, _ in learned)
    sides = {side for rows, side in learned if rows}
    if not all(isinstance(d, int) for d in grid) or grid[0] * grid[1] + extra != shapes[first][1] or len(sides) > 1:
        return unknown
    return grid, (strides[0] if len(set(strides)) == 1 else None), extra, sides.pop() if sides else "start"


def _learned_tokens(concat, shapes, reach):
    """(rows, side) a token Concat (rank 3, along the tokens) adds from inputs that carry no
    image data (a learned parameter expanded to the batch), ``side`` ``"start"`` or ``"end"``
    of the image rows (None: on both sides); (0, None) for any other Concat."""
    out = shapes.get(concat.output[0]) or []
    axis = next((a.i for a in concat.attribute if a.name == "axis"), 0)
    learned = [i for i, n in enumerate(concat.input) if n not in reach]
    image = [i for i, n in enumerate(concat.input) if n in reach]
    if len(out) != 3 or axis not in (1, -2) or not image:
        return 0, None
    sizes = [(shapes.get(concat.input[i]) or [None, None])[1] for i in learned]
    if not all(isinstance(d, int) for d in sizes) or any(len(shapes.get(concat.input[i]) or []) != 3 for i in learned):
        return 0, None
    side = "start" if max(learned, default=-1) < min(image) else "end" if min(learned) > max(image) else None
    return sum(sizes), side


def _feeds_only_pooling(model, name, candidates):
    """An activation immediately followed by pooling: only the pooled map is a boundary."""
    readers = consumers(model, name)
    return len(readers) == 1 and readers[0].op_type in POOLS and readers[0].output[0] in candidates


def _layout_name(letters):
    return letters if letters in ("NCHW", "NHWC") else "unknown"


def describe(model, names):
    """Boundaries for tensors the user named (shape and layout as for found ones; a
    rank-3 tensor is a token sequence, its grid read as for found ones)."""
    inferred = infer_shapes(model)
    shapes = tensor_shapes(inferred)
    layout = layouts(inferred, shapes)
    reach = reachable(inferred)
    return [
        Boundary(n, shapes[n], "unknown", "tokens", *_token_layout(inferred, shapes, reach, n))
        if len(shapes.get(n) or []) == 3
        else Boundary(n, shapes.get(n), _layout_name(layout.get(n)))
        for n in names
    ]


def check_boundary(model, name):
    """Raise unless ``name`` is a tensor on the main path (it dominates the outputs)."""
    require_tensor(model, name, what="boundary")
    if not dominates_outputs(model, name):
        valid = [b.name for b in find_boundaries(model)]
        raise BoundaryError(
            f"boundary {name!r} is not on the main path of graph {model.graph.name!r}: a skip connection, "
            f"side path or shape sub-graph goes around it; valid boundaries: {', '.join(valid) or '(none found)'}"
        )
