"""Normalising a teacher's graph before it is tapped, cut and converted.

Exporters leave bookkeeping in the graph that gets in the way of cutting it into
blocks: Constant nodes, and sub-graphs that compute a Reshape target from the
input's shape (Shape -> Gather -> Concat -> Reshape, common in tf2onnx, jax2onnx and
dynamo output), and auto_pad SAME_* (jax2onnx, tf2onnx) that onnx2torch cannot
convert. :func:`normalize` turns Constant nodes into initializers and folds every
sub-graph whose value depends on the input only through its shape, for a fixed
input shape, while the batch axis stays dynamic: each folded value is computed
with ONNX Runtime at two batch sizes; a value that does not change is frozen, a
Reshape target whose batch entry changes gets that entry rewritten to -1 (or 0),
anything else batch-dependent is left as it was. SAME padding becomes explicit
pads for the fixed spatial dims. The result is checked against the original
under ONNX Runtime at two batch sizes. Tensor names of the main path do not
change; running it twice changes nothing more.
"""

import shlex

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amalgam.runtime.errors import BadInputError, ParityError, first_line
from amalgam.runtime.graph import data_inputs, prune_dead
from amalgam.runtime.graph import dims as graph_dims
from amalgam.runtime.parity import compare
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import infer_shapes

FOLD_BATCHES = (2, 3)
CHECK_BATCHES = (1, 4)
MAX_FOLDED_ELEMENTS = 1 << 20
SHAPE_ONLY = {"Shape", "Size"}
PADDED_OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}
NEVER_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
}


def normalize(model, input_shape=None):
    """``model`` with Constant nodes as initializers and shape sub-graphs folded.

    ``input_shape``: ``{input name: [batch, d1, d2, ...]}`` (or one list for a
    one-input graph) fixing the dims the graph leaves open; its batch entry is
    ignored, the batch axis stays as the graph has it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _constants_to_initializers(out.graph)
    _open_negative_dims(out.graph)
    shapes = _input_shapes(out, input_shape)
    _fix_input_dims(out, shapes)
    terminals = _fold_terminals(out.graph)
    if terminals:
        _require_closed(shapes)
        batches = FOLD_BATCHES if _batch_is_dynamic(out) else (None,)
        values = [_evaluate(out, terminals, shapes, b) for b in batches]
        _fold(out.graph, terminals, values, batches)
    prune_dead(out.graph)
    out = infer_shapes(out)
    _explicit_pads(out.graph)
    if _nodes(out) != _nodes(model):  # something was moved, folded, rewritten or dropped
        _verify(model, out, shapes)
    return out


def _nodes(model):
    return [n.SerializeToString() for n in model.graph.node]


def _constant_value(node):
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None or attr.name == "sparse_value":
        return None
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    value = helper.get_attribute_value(attr)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}.get(
        attr.name, object
    )
    return np.array(value, dtype=dtype)


def _constants_to_initializers(graph):
    keep = []
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is None:
            keep.append(node)
        else:
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    del graph.node[:]
    graph.node.extend(keep)


def _open_negative_dims(graph):
    """A dim written as -1 (some exporters' "any size") becomes an open, named dim:
    ``batch`` on axis 0 of the inputs and outputs, ``<tensor>_<axis>`` elsewhere."""
    for vi in list(graph.input) + list(graph.output):
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = "batch" if i == 0 else f"{vi.name}_{i}"


def example_shape(name, dims):
    """A ready-to-paste ``--input-shape NAME:D0,D1,...`` for an input with open dims
    (``None``): batch 1, 3 channels on axis 1, 224 elsewhere (say which sizes are yours)."""
    filled = [1] + [
        d if isinstance(d, int) and d > 0 else (3 if i == 1 and len(dims) == 4 else 224)
        for i, d in enumerate(dims[1:], 1)
    ]
    return f"--input-shape {shlex.quote(name + ':' + ','.join(map(str, filled)))}"


def _input_shapes(model, input_shape):
    """``{data input: dims}`` with open dims filled from ``input_shape``."""
    inputs = {vi.name: vi for vi in model.graph.input if vi.name in data_inputs(model)}
    given = input_shape or {}
    if not isinstance(given, dict):
        if len(inputs) != 1:
            raise BadInputError(f"input_shape {list(given)} is ambiguous: the graph has inputs {list(inputs)}")
        given = {next(iter(inputs)): given}
    shapes = {name: graph_dims(vi) or [] for name, vi in inputs.items()}
    for name, dims in given.items():
        if name not in shapes:
            raise BadInputError(f"input_shape names input {name!r}; the graph's inputs are {list(inputs)}")
        if len(dims) != len(shapes[name]):
            raise BadInputError(
                f"input_shape for {name!r} has {len(dims)} dims; the graph input has rank {len(shapes[name])}"
            )
        for i, (have, want) in enumerate(zip(shapes[name], dims)):
            if i > 0 and have is not None and have != int(want):
                raise BadInputError(f"input_shape for {name!r}: dim {i} is {want}, the graph fixes it to {have}")
        shapes[name] = shapes[name][:1] + [int(d) for d in dims[1:]]
    return shapes


def _fix_input_dims(model, shapes):
    for vi in model.graph.input:
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if i > 0 and vi.name in shapes and not dim.HasField("dim_value") and shapes[vi.name][i] is not None:
                dim.dim_value = shapes[vi.name][i]


def _batch_is_dynamic(model):
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in data_inputs(model) and dims and not dims[0].HasField("dim_value"):
            return True
    return False


def _require_closed(shapes):
    for name, dims in shapes.items():
        if any(d is None for d in dims[1:]):
            raise BadInputError(
                f"input {name!r} has open dims {['?' if d is None else d for d in dims]}: the shape sub-graphs "
                f"cannot be folded; give its shape, e.g. {example_shape(name, dims)} (with your own sizes)"
            )


def _has_subgraph(node):
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def _fold_terminals(graph):
    """Outputs of foldable nodes that non-foldable nodes (or the graph) read."""
    const = {t.name for t in graph.initializer}
    foldable = set()
    for node in graph.node:
        if node.op_type in NEVER_FOLD or _has_subgraph(node):
            continue
        if node.op_type in SHAPE_ONLY or all(n in const for n in node.input if n):
            foldable.update(o for o in node.output if o)
            const.update(o for o in node.output if o)
    read = {n for node in graph.node if not set(node.output) & foldable for n in node.input}
    read |= {o.name for o in graph.output}
    return [n for node in graph.node for n in node.output if n in foldable and n in read]


def _feed(model, shapes, batch):
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        if vi.name not in shapes:
            continue
        dims = [batch if (i == 0 and d is None) else d for i, d in enumerate(shapes[vi.name])]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = (
            rng.standard_normal(dims).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(dims, dtype)
        )
    return feeds


def _evaluate(model, names, shapes, batch):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    values = _run(make_session(probe, opt_level="basic"), names, _feed(model, shapes, batch), model)
    return dict(zip(names, values))


def _run(session, names, feeds, model):
    """``session.run``; a graph that loads but fails to run (e.g. a weight of the wrong
    rank) is bad input, named by its graph and the input shapes it was run with."""
    try:
        return session.run(names, feeds)
    except Exception as e:  # onnxruntime's Fail, InvalidArgument, RuntimeException
        given = {k: list(v.shape) for k, v in feeds.items()}
        raise BadInputError(
            f"graph {model.graph.name!r} does not run under ONNX Runtime on inputs {given}: {first_line(e)}"
        ) from e


def _fold(graph, terminals, values, batches):
    readers = {}
    for node in graph.node:
        for i, n in enumerate(node.input):
            readers.setdefault(n, []).append((node, i))
    for name in terminals:
        seen = [v[name] for v in values]
        if seen[0].size > MAX_FOLDED_ELEMENTS or name in {o.name for o in graph.output}:
            continue
        if all(s.shape == seen[0].shape and np.array_equal(s, seen[0]) for s in seen):
            folded = seen[0]
        else:
            folded = _batch_free_reshape_target(seen, batches, readers.get(name, []))
        if folded is not None:
            graph.initializer.append(numpy_helper.from_array(np.asarray(folded), name))
            _drop_producer(graph, name)


def _batch_free_reshape_target(seen, batches, readers):
    """A Reshape target whose batch entry was baked in, rewritten to -1 (or 0): or None."""
    if not readers or any(node.op_type != "Reshape" or i != 1 for node, i in readers):
        return None
    first, second = seen
    if first.ndim != 1 or first.shape != second.shape:
        return None
    differ = np.flatnonzero(first != second)
    if len(differ) != 1:
        return None
    i = differ[0]
    scale = first[i] / batches[0]
    if scale != second[i] / batches[1] or scale != int(scale) or scale < 1:
        return None
    target = first.copy()
    if -1 not in target:
        target[i] = -1
    elif i == 0 and scale == 1 and all(_attr(node, "allowzero", 0) == 0 for node, _ in readers):
        target[i] = 0
    else:
        return None
    return target


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _drop_producer(graph, name):
    """The initializer ``name`` now holds the value: its producer stops writing it."""
    for node in graph.node:
        if name in node.output:
            outputs = [("" if o == name else o) for o in node.output]
            del node.output[:]
            node.output.extend(outputs)


def _explicit_pads(graph):
    """auto_pad SAME_UPPER/SAME_LOWER (jax2onnx, tf2onnx) -> explicit pads, for known spatial dims."""
    shapes = {vi.name: graph_dims(vi) for vi in list(graph.input) + list(graph.value_info)}
    weights = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        mode = _attr(node, "auto_pad", b"NOTSET")
        if node.op_type not in PADDED_OPS or mode not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        spatial = (shapes.get(node.input[0]) or [None])[2:]
        kernel = _attr(node, "kernel_shape", None) or weights.get(node.input[1] if len(node.input) > 1 else "", [])[2:]
        if not spatial or None in spatial or len(kernel) != len(spatial):
            continue
        strides = _attr(node, "strides", [1] * len(spatial))
        dilations = _attr(node, "dilations", [1] * len(spatial))
        total = [
            max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            for n, s, k, d in zip(spatial, strides, kernel, dilations)
        ]
        small = [t // 2 for t in total]
        large = [t - t // 2 for t in total]
        pads = small + large if mode == b"SAME_UPPER" else large + small
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("pads", pads)])


def _verify(original, normalized, shapes):
    """Both graphs give the same outputs under ONNX Runtime at two batch sizes."""
    if any(d is None for dims in shapes.values() for d in dims[1:]):
        return  # open dims: nothing was folded (see _require_closed), only Constants moved
    batches = CHECK_BATCHES if _batch_is_dynamic(normalized) else (None,)
    names = [o.name for o in original.graph.output]
    a, b = make_session(original, opt_level="basic"), make_session(normalized, opt_level="basic")
    for batch in batches:
        feeds = _feed(normalized, shapes, batch)
        want = dict(zip(names, _run(a, names, feeds, original)))
        got = dict(zip(names, _run(b, names, feeds, normalized)))
        try:
            compare(want, got, title=f"normalised vs original at batch size {batch}").raise_if_failed()
        except ParityError as e:
            raise type(e)(
                f"normalising graph {original.graph.name!r} changed its outputs ({e}); "
                "the shape sub-graphs could not be folded safely"
            ) from e
