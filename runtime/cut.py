"""Cutting a teacher's graph at block boundaries.

* branch (paper: teacher t's layers after block b): :func:`cut_branch`, from the
  boundary tensor to the chosen outputs; the trunk's features at b flow into it.
* block (between two boundaries): :func:`cut_block`.
* prefix (the teacher's blocks 1..b): :func:`cut_prefix`, from the image to b.

Each piece is a checked ONNX model whose new input keeps the boundary's name and
inferred shape with a dynamic batch axis, and holds only the initializers it needs.

A piece may need the batch size from a tensor before its start: the dynamo
exporter writes ``Shape(x, start=0, end=1)`` for index arithmetic (``as_strided``
in torchvision's ConvNeXt), which normalize cannot fold since it depends on the
batch. The batch is the same on every batch-first tensor, so the piece reads it from
its own start instead (:func:`_batch_from_start`).
"""

import onnx
from onnx import helper
from onnx.utils import Extractor

from amalgam.runtime.blocks import check_boundary
from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.graph import data_inputs, topological, upstream
from amalgam.runtime.taps import infer_shapes, require_tensor

BATCH = "batch"


def cut_branch(model, start, outputs):
    """The sub-graph from boundary ``start`` to ``outputs`` (tensor names)."""
    check_boundary(model, start)
    return _extract(_batch_from_start(model, start), [start], list(outputs), f"branch after {start!r}")


def cut_block(model, start, end):
    """The block between boundaries ``start`` and ``end``."""
    check_boundary(model, end)
    return cut_branch(model, start, [end])


def cut_prefix(model, end):
    """The graph from its inputs to boundary ``end``."""
    check_boundary(model, end)
    return _extract(model, data_inputs(model), [end], f"prefix up to {end!r}")


def _extract(model, inputs, outputs, what):
    for name in outputs:
        require_tensor(model, name, what="output")
    inferred = infer_shapes(model)
    piece = Extractor(inferred).extract_model(inputs, outputs)
    piece.graph.name = f"{model.graph.name}: {what}"
    _require_closed(piece, inputs, what)
    for vi in piece.graph.input:
        _dynamic_batch(vi)
    del piece.graph.value_info[:]
    for vi in piece.graph.output:
        vi.type.tensor_type.ClearField("shape")
    piece = infer_shapes(piece)
    try:
        onnx.checker.check_model(piece, full_check=True)
    except Exception as e:
        raise BoundaryError(f"the {what} of graph {model.graph.name!r} is not a valid model: {e}") from e
    return piece


def _batch_from_start(model, start):
    """A copy of ``model`` whose batch-size nodes (``Shape`` with start 0, end 1) that
    read a tensor from before ``start`` are read, past ``start``, from a new ``Shape`` of
    ``start``. What ``start`` itself is computed from keeps the original (a ViT's class
    token expanded to the batch before its encoder layers): rewiring that would be a cycle."""
    after = {start}
    for node in model.graph.node:  # topological order
        if after & set(node.input):
            after.update(node.output)
    batch_only = [
        n
        for n in model.graph.node
        if n.op_type == "Shape"
        and n.input[0] not in after
        and {a.name: a.i for a in n.attribute} == {"start": 0, "end": 1}
    ]
    if not batch_only:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    before = upstream(copy.graph.node, start)
    renamed = {n.output[0]: f"{n.output[0]}_of_{start}" for n in batch_only}
    for node in copy.graph.node:
        if not before & set(node.output):
            node.input[:] = [renamed.get(x, x) for x in node.input]
    copy.graph.node.extend(helper.make_node("Shape", [start], [new], start=0, end=1) for new in renamed.values())
    known = [i.name for i in copy.graph.input] + [t.name for t in copy.graph.initializer]
    nodes = topological(list(copy.graph.node), known)  # the new Shape nodes wait for start
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def _require_closed(piece, inputs, what):
    """Every tensor the piece reads is made inside it, an initializer or one of ``inputs``."""
    known = set(inputs) | {t.name for t in piece.graph.initializer}
    for node in piece.graph.node:
        missing = [n for n in node.input if n and n not in known]
        if missing:
            raise BoundaryError(
                f"the {what} reads {missing} from before its start {inputs}: the outputs do not come after "
                "the start, or a shape sub-graph reaches back (normalize() the model first)"
            )
        known.update(node.output)


def _dynamic_batch(value_info):
    dims = value_info.type.tensor_type.shape.dim
    if dims and not dims[0].dim_param:
        dims[0].Clear()
        dims[0].dim_param = BATCH
