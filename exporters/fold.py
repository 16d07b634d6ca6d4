"""Exact graph folds on the exported student, after onnxsim (torch-free).

Paper terms -> code: a TargetNet branch is gate (the filter) -> adapter -> the
teacher's own layers. Trained, the gate's per-channel multiply and the adapter's
1x1 conv are extra nodes that ONNX Runtime pays for on every call, mostly per
node at batch 1. Each fold here rewrites them away where the result is the same
function (up to float rounding), and the parity gate (``amalgam validate``:
``student.onnx`` vs ``student.raw.onnx``) checks every exported student.

* :func:`pool_first`: a global pool (ReduceMean / ReduceSum over the spatial
  axes) moves up past what commutes with it: a Transpose (axes renamed), a
  per-channel Mul (the gate: ``GAP(x * g) = GAP(x) * g``), a 1x1 Conv (the adapter
  becomes a Gemm on the pooled vector). A branch that pools first then gates a
  ``(N, C)`` vector instead of an ``(N, C, H, W)`` map, and its pool is the gate's own
  squeeze (merged by :func:`merge_duplicates`).
* :func:`fold_linear_conv`: a 1x1 Conv (the adapter, no nonlinearity after it)
  folds into the Conv that follows it. The adapter's bias through a zero-padded
  conv is not a per-channel constant at the borders; it is computed exactly (ONNX
  Runtime runs the following conv on the bias map) and added as a constant map.
* :func:`fold_gemm_chain`: Gemm(Gemm(x)) -> one Gemm; a constant per-column scale
  before a Gemm goes into its weights. Helpers feed it: :func:`divide_as_multiply`,
  :func:`sum_as_mean` (a pooled sum is a mean times a constant), :func:`sink_scalar`
  (the gate's x2 moves down to the Gemm), :func:`drop_reshape_round_trip`.
* :func:`merge_gemms` and :func:`sink_split`: Gemms reading one feature (the
  branches' gate squeezes) become one Gemm and a Split, and the Split moves down past
  what the parts all do alike (one Relu, block-diagonal Gemms, one Sigmoid, one Mul).
* :func:`merge_duplicates`: nodes with the same op, attributes and inputs run once.
* :func:`split_outputs` (last): task outputs gathered column by column from one Gemm
  come out of one transposed Gemm and one Split.

:func:`fold_student` applies them all until none applies and returns the counts.
Every rewrite is exact in real arithmetic; in float32 the results differ by rounding
(re-associated sums), well inside the parity gate's tolerance.
"""

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.graph import node_inputs, prune_dead

SPATIAL = (2, 3)


class GraphView:
    """Producers, consumers, constants and inferred shapes of one graph, rebuilt on demand."""

    def __init__(self, model):
        self.model = model
        self.refresh()

    def refresh(self):
        g = self.model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.inits = {t.name: t for t in g.initializer}
        inferred = onnx.shape_inference.infer_shapes(self.model)
        self.shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def const(self, name):
        """The value of an initializer or Constant output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def only_use(self, name, node):
        """True when ``node`` is the one reader of ``name`` and it is no graph output."""
        readers = self.consumers.get(name, [])
        return name not in self.outputs and len(readers) == 1 and list(readers[0].output) == list(node.output)

    def add_const(self, array, hint):
        name = self.fresh(hint)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        self.inits[name] = self.model.graph.initializer[-1]
        return name

    def fresh(self, hint):
        taken = set(self.producer) | set(self.inits) | {i.name for i in self.model.graph.input}
        hint = hint.split("_fold")[0].split("_merged")[0]
        k = 0
        while f"{hint}_fold{k}" in taken:
            k += 1
        return f"{hint}_fold{k}"

    def replace(self, old, new_nodes):
        """Put ``new_nodes`` where ``old`` was (keeps the topological order)."""
        g = self.model.graph
        at = next(i for i, n in enumerate(g.node) if list(n.output) == list(old.output))
        del g.node[at]
        for k, n in enumerate(new_nodes):
            g.node.insert(at + k, n)

    def drop(self, node):
        g = self.model.graph
        del g.node[next(i for i, n in enumerate(g.node) if list(n.output) == list(node.output))]


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_pointwise_conv(node, view):
    """A 1x1, stride 1, unpadded, ungrouped Conv with constant weights (and bias)."""
    if node.op_type != "Conv" or view.const(node.input[1]) is None:
        return False
    if len(node.input) > 2 and node.input[2] and view.const(node.input[2]) is None:
        return False
    a = attrs(node)
    w = view.const(node.input[1])
    return (w.ndim == 4 and w.shape[2:] == (1, 1) and a.get("group", 1) == 1
            and all(v == 1 for v in a.get("strides", [1])) and all(v == 1 for v in a.get("dilations", [1]))
            and not any(a.get("pads", [0])) and a.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID"))


def _bias(view, node, channels):
    if len(node.input) > 2 and node.input[2]:
        return view.const(node.input[2]).astype(np.float64)
    return np.zeros(channels)


def _reduce_axes(node, view):
    """(axes, keepdims) of a ReduceMean / ReduceSum, or None when unknown."""
    a = attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = view.const(node.input[1])
        axes = None if value is None else value.tolist()
    rank = len(view.shapes.get(node.input[0]) or [])
    if axes is None or not rank or a.get("noop_with_empty_axes", 0):
        return None
    return sorted(int(x) % rank for x in axes), a.get("keepdims", 1)


def _reduce_node(view, like, x, axes, keepdims, out):
    """A reducer of ``like``'s kind over ``axes`` (attribute or input, as ``like`` has it)."""
    kept = {a.name: helper.get_attribute_value(a) for a in like.attribute if a.name not in ("axes", "keepdims")}
    if len(like.input) > 1 or like.op_type == "ReduceSum":
        axes_name = view.add_const(np.array(axes, dtype=np.int64), "axes")
        return helper.make_node(like.op_type, [x, axes_name], [out], keepdims=keepdims, **kept)
    return helper.make_node(like.op_type, [x], [out], axes=axes, keepdims=keepdims, **kept)


def _pool_past_transpose(view, reduce, prev, axes, keepdims):
    perm = attrs(prev).get("perm")
    if perm is None:
        return None
    inner = sorted(perm[a] for a in axes)
    kept = [perm[i] for i in range(len(perm)) if i not in axes]
    pooled = view.fresh(reduce.output[0])
    nodes = [_reduce_node(view, reduce, prev.input[0], inner, keepdims, pooled)]
    if keepdims:
        nodes.append(helper.make_node("Transpose", [pooled], [reduce.output[0]], perm=perm))
    elif kept == sorted(kept):
        nodes[0].output[0] = reduce.output[0]
    else:
        rank = sorted(kept)
        nodes.append(helper.make_node("Transpose", [pooled], [reduce.output[0]], perm=[rank.index(k) for k in kept]))
    return nodes


def _pool_past_mul(view, reduce, prev, axes, keepdims):
    """GAP(x * g) = GAP(x) * g for a g constant along the pooled axes."""
    shape = view.shapes.get(prev.output[0])
    for big, small in ((prev.input[0], prev.input[1]), (prev.input[1], prev.input[0])):
        s, b = view.shapes.get(small), view.shapes.get(big)
        if not s or not b or len(s) != len(b) or b != shape or any(s[a] != 1 for a in axes):
            continue
        pooled = view.fresh(reduce.output[0])
        nodes = [_reduce_node(view, reduce, big, axes, keepdims, pooled)]
        if not keepdims:
            squeezed = view.fresh(small)
            nodes.append(helper.make_node("Squeeze", [small, view.add_const(np.array(axes, np.int64), "axes")],
                                          [squeezed]))
            small = squeezed
        nodes.append(helper.make_node("Mul", [pooled, small], [reduce.output[0]]))
        return nodes
    return None


def _pool_past_conv(view, reduce, prev, axes, keepdims):
    """ReduceMean over H, W of a 1x1 conv = the conv (a Gemm) of the pooled input."""
    shape = view.shapes.get(prev.input[0]) or []
    if axes != list(SPATIAL) or len(shape) != 4 or not _is_pointwise_conv(prev, view):
        return None
    w = view.const(prev.input[1])
    b = _bias(view, prev, w.shape[0])
    if reduce.op_type == "ReduceSum":
        if None in shape[2:]:
            return None
        b = b * shape[2] * shape[3]
    pooled = view.fresh(reduce.output[0])
    nodes = [_reduce_node(view, reduce, prev.input[0], axes, keepdims, pooled)]
    if keepdims:
        nodes.append(helper.make_node("Conv", [pooled, prev.input[1], view.add_const(b.astype(np.float32), "bias")],
                                      [reduce.output[0]], kernel_shape=[1, 1]))
    else:
        nodes.append(helper.make_node("Gemm", [pooled, view.add_const(w[:, :, 0, 0], "weight"),
                                               view.add_const(b.astype(np.float32), "bias")],
                                      [reduce.output[0]], transB=1))
    return nodes


POOL_MOVES = {"Transpose": _pool_past_transpose, "Mul": _pool_past_mul, "Conv": _pool_past_conv}


def pool_first(view):
    """Move each global pool one step up past a Transpose, gate Mul or 1x1 Conv; returns the count."""
    done = 0
    for reduce in list(view.model.graph.node):
        if reduce.op_type not in ("ReduceMean", "ReduceSum"):
            continue
        found = _reduce_axes(reduce, view)
        prev = view.producer.get(reduce.input[0])
        if found is None or prev is None or prev.op_type not in POOL_MOVES \
                or not view.only_use(reduce.input[0], reduce):
            continue
        nodes = POOL_MOVES[prev.op_type](view, reduce, prev, *found)
        if nodes is None:
            continue
        view.replace(reduce, nodes)
        view.drop(prev)
        view.refresh()
        done += 1
    return done


def _conv_on_map(conv, bias_map, weight):
    """ONNX Runtime runs ``conv`` (its attributes, ``weight``, no bias) on one constant input map."""
    from runtime.session import make_session

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(bias_map.shape))
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs(conv))
    graph = helper.make_graph([node], "bias_map", [x], [y], [numpy_helper.from_array(weight.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return make_session(model, opt_level="none").run(None, {"x": bias_map.astype(np.float32)})[0].astype(np.float64)


def fold_linear_conv(view):
    """Fold each 1x1 Conv whose one reader is an ungrouped Conv into it; returns the count."""
    done = 0
    for first in list(view.model.graph.node):
        if not _is_pointwise_conv(first, view):
            continue
        readers = view.consumers.get(first.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "Conv" or not view.only_use(first.output[0], readers[0]):
            continue
        second = readers[0]
        if second.input[0] != first.output[0]:
            continue
        w2 = view.const(second.input[1])
        mid = view.shapes.get(first.output[0]) or []
        if w2 is None or attrs(second).get("group", 1) != 1 or len(mid) != 4:
            continue
        w1 = view.const(first.input[1])[:, :, 0, 0].astype(np.float64)
        b1, b2 = _bias(view, first, w1.shape[0]), _bias(view, second, w2.shape[0])
        weight = np.einsum("omhw,mi->oihw", w2.astype(np.float64), w1)
        extra = _bias_through(second, w2, b1, mid)
        if extra is None:
            continue
        name = view.fresh(second.output[0])
        if extra.ndim == 1:
            nodes = [_conv_like(second, first.input[0], weight, extra + b2, second.output[0], view)]
        else:
            nodes = [_conv_like(second, first.input[0], weight, None, name, view),
                     helper.make_node("Add", [name, view.add_const((extra + b2[:, None, None])[None].astype(np.float32),
                                                                   "bias_map")], [second.output[0]])]
        view.replace(second, nodes)
        view.drop(first)
        view.refresh()
        done += 1
    return done


def _bias_through(second, w2, b1, mid):
    """What the first conv's bias adds after ``second``: a per-channel vector, a (C, H, W) map, or None."""
    if not b1.any():
        return np.zeros(w2.shape[0])
    a = attrs(second)
    if not any(a.get("pads", [0])) and a.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID"):
        return np.einsum("omhw,m->o", w2.astype(np.float64), b1)
    if None in mid[2:]:
        return None  # the border correction needs the spatial size
    bias_map = np.broadcast_to(b1[None, :, None, None], (1, len(b1), *mid[2:]))
    out = _conv_on_map(second, bias_map, w2)[0]
    flat = out.reshape(len(out), -1)
    return flat[:, 0] if np.allclose(flat, flat[:, :1], rtol=0, atol=1e-7) else out


def _conv_like(conv, x, weight, bias, out, view):
    inputs = [x, view.add_const(weight.astype(np.float32), "weight")]
    if bias is not None:
        inputs.append(view.add_const(np.asarray(bias, np.float32), "bias"))
    return helper.make_node("Conv", inputs, [out], **attrs(conv))


def _gemm_parts(node, view):
    """(W as (in, out), b (out,)) of a plain Gemm / MatMul with constant weights, else None."""
    if node.op_type == "MatMul":
        w = view.const(node.input[1])
        return None if w is None or w.ndim != 2 else (w.astype(np.float64), np.zeros(w.shape[1]))
    if node.op_type != "Gemm":
        return None
    a = attrs(node)
    w = view.const(node.input[1])
    if w is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        return None
    w = (w.T if a.get("transB", 0) else w).astype(np.float64)
    b = np.zeros(w.shape[1])
    if len(node.input) > 2 and node.input[2]:
        c = view.const(node.input[2])
        if c is None:
            return None
        b = np.broadcast_to(c.astype(np.float64).reshape(-1) if c.size == w.shape[1] else c.astype(np.float64),
                            (w.shape[1],)).copy()
    return w, b


def _gemm(view, x, w, b, out):
    return helper.make_node("Gemm", [x, view.add_const(w.T.astype(np.float32), "weight"),
                                     view.add_const(b.astype(np.float32), "bias")], [out], transB=1)


def fold_gemm_chain(view):
    """Gemm(Gemm(x)) -> Gemm(x); Gemm(x * c) -> Gemm(x) for a constant per-column c; returns the count."""
    done = 0
    for second in list(view.model.graph.node):
        parts = _gemm_parts(second, view)
        prev = view.producer.get(second.input[0])
        if parts is None or prev is None or not view.only_use(second.input[0], second):
            continue
        w2, b2 = parts
        rank = len(view.shapes.get(second.input[0]) or [])
        if prev.op_type in ("Gemm", "MatMul") and rank == 2 and _gemm_parts(prev, view) is not None:
            w1, b1 = _gemm_parts(prev, view)
            node = _gemm(view, prev.input[0], w1 @ w2, b1 @ w2 + b2, second.output[0])
        elif prev.op_type == "Mul" and rank == 2:
            scaled = _column_scale(view, prev, w2.shape[0])
            if scaled is None:
                continue
            x, c = scaled
            node = _gemm(view, x, c[:, None] * w2, b2, second.output[0])
        else:
            continue
        view.replace(second, [node])
        view.drop(prev)
        view.refresh()
        done += 1
    return done


def _column_scale(view, mul, width):
    """(x, c) when ``mul`` is ``x * c`` with c a constant broadcast along rows, else None."""
    for x, c in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        value = view.const(c)
        if value is not None and (value.size == 1 or value.shape in ((width,), (1, width))):
            return x, np.broadcast_to(value.astype(np.float64).reshape(-1), (width,))
    return None


def merge_duplicates(view):
    """Nodes with the same op, domain, attributes and inputs computed once; returns the count."""
    seen, rename, keep, done = {}, {}, [], 0
    g = view.model.graph
    for node in g.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        key = (node.domain, node.op_type, tuple(_input_key(view, name) for name in node.input),
               _attribute_key(node))
        twin = seen.get(key)
        if twin is not None and len(twin.output) == len(node.output) \
                and not any(o in view.outputs for o in node.output):
            rename.update(zip(node.output, twin.output))
            done += 1
            continue
        seen.setdefault(key, node)
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    view.refresh()
    return done


def _attribute_key(node):
    """A node's attributes, those left at the operator's default dropped (equal nodes match)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, domain=node.domain)
        defaults = {k: v.default_value for k, v in schema.attributes.items() if v.default_value.name}
    except onnx.defs.SchemaError:
        defaults = {}
    kept = []
    for a in node.attribute:
        default = defaults.get(a.name)
        if default is None or helper.get_attribute_value(a) != helper.get_attribute_value(default):
            kept.append(a.SerializeToString())
    return tuple(sorted(kept))


def _input_key(view, name):
    """An input's identity: its name, or its value for a small constant (equal constants match)."""
    value = view.const(name) if name in view.inits else None
    if value is None or value.size > 64:
        return name
    return (str(value.dtype), value.shape, value.tobytes())


def _scalar(view, name):
    """The float value of a one-element constant, else None."""
    value = view.const(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 and value.dtype.kind == "f" else None


def _bypass(view, node, source):
    """Readers of ``node``'s output read ``source`` instead (never a graph output)."""
    for reader in view.consumers.get(node.output[0], []):
        for k, name in enumerate(reader.input):
            if name == node.output[0]:
                reader.input[k] = source


def drop_reshape_round_trip(view):
    """Squeeze(Reshape(x)) or Squeeze(Unsqueeze(x)) giving x's own shape -> x (the gate's view of
    its weights as (N, C, 1, 1), undone once :func:`pool_first` moved the gate onto (N, C))."""
    done = 0
    for squeeze in list(view.model.graph.node):
        if squeeze.op_type != "Squeeze" or squeeze.output[0] in view.outputs:
            continue
        reshape = view.producer.get(squeeze.input[0])
        if reshape is None or reshape.op_type not in ("Reshape", "Unsqueeze") \
                or not view.only_use(reshape.output[0], squeeze):
            continue
        x, out = view.shapes.get(reshape.input[0]), view.shapes.get(squeeze.output[0])
        if not x or x != out or None in x[1:]:
            continue
        _bypass(view, squeeze, reshape.input[0])
        view.drop(squeeze)
        view.drop(reshape)
        view.refresh()
        done += 1
    return done


def divide_as_multiply(view):
    """Div(x, c) by a constant -> Mul(x, 1 / c), so the scale can fold into a Gemm."""
    done = 0
    for div in list(view.model.graph.node):
        c = view.const(div.input[1]) if div.op_type == "Div" else None
        if c is None or c.dtype.kind != "f" or not np.all(c):
            continue
        view.replace(div, [helper.make_node("Mul", [div.input[0], view.add_const((1.0 / c).astype(c.dtype), "scale")],
                                            list(div.output))])
        view.refresh()
        done += 1
    return done


def sum_as_mean(view):
    """ReduceSum over axes of static size K -> ReduceMean * K (the mean is then shared, K folded)."""
    done = 0
    for node in list(view.model.graph.node):
        found = _reduce_axes(node, view) if node.op_type == "ReduceSum" else None
        shape = view.shapes.get(node.input[0]) or []
        if found is None or any(shape[a] is None for a in found[0]):
            continue
        mean = view.fresh(node.output[0])
        size = float(np.prod([shape[a] for a in found[0]]))
        view.replace(node, [_reduce_node(view, helper.make_node("ReduceMean", ["x", "axes"], ["y"]), node.input[0],
                                         found[0], found[1], mean),
                            helper.make_node("Mul", [mean, view.add_const(np.array(size, np.float32), "size")],
                                             list(node.output))])
        view.refresh()
        done += 1
    return done


def sink_scalar(view):
    """Mul(a, Mul(b, k)) -> Mul(Mul(a, b), k) for a constant scalar k, moving k toward a Gemm."""
    done = 0
    for outer in list(view.model.graph.node):
        if outer.op_type != "Mul":
            continue
        for j in (0, 1):
            inner = view.producer.get(outer.input[j])
            other = outer.input[1 - j]
            if inner is None or inner.op_type != "Mul" or view.const(other) is not None \
                    or not view.only_use(inner.output[0], outer):
                continue
            k = next((i for i in (0, 1) if _scalar(view, inner.input[i]) is not None), None)
            if k is None:
                continue
            mid = view.fresh(outer.output[0])
            view.replace(outer, [helper.make_node("Mul", [other, inner.input[1 - k]], [mid]),
                                 helper.make_node("Mul", [mid, inner.input[k]], list(outer.output))])
            view.drop(inner)
            view.refresh()
            done += 1
            break
    return done


def merge_gemms(view):
    """Gemms reading the same (N, C) feature (the gates' squeezes, heads) -> one Gemm and a Split."""
    groups = {}
    for node in view.model.graph.node:
        if _gemm_parts(node, view) is not None and len(view.shapes.get(node.input[0]) or []) == 2:
            groups.setdefault(node.input[0], []).append(node)
    done = 0
    for x, nodes in groups.items():
        if len(nodes) < 2:
            continue
        parts = [_gemm_parts(n, view) for n in nodes]
        merged = view.fresh(x + "_merged")
        gemm = _gemm(view, x, np.concatenate([w for w, _ in parts], 1), np.concatenate([b for _, b in parts]), merged)
        split = _split(view, merged, [w.shape[1] for w, _ in parts], [n.output[0] for n in nodes])
        for n in nodes[1:]:
            view.drop(n)
        view.replace(nodes[0], [gemm, split])
        done += 1
    if done:
        _toposort(view)
    return done


def _split(view, x, sizes, outputs):
    return helper.make_node("Split", [x, view.add_const(np.array(sizes, np.int64), "sizes")], outputs, axis=1)


UNARY = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Exp", "Abs", "Neg")


def sink_split(view):
    """Push a column Split below what its parts all do alike, merging them; returns the count.

    Alike: the same unary op, a Mul by the same scalar or the same (N, C) tensor (tiled),
    a Gemm each (block-diagonal weights); Gathers of columns read the unsplit tensor."""
    done = 0
    for split in list(view.model.graph.node):
        sizes = view.const(split.input[1]) if split.op_type == "Split" and len(split.input) > 1 else None
        if sizes is None or attrs(split).get("axis", 0) not in (1, -1) \
                or len(view.shapes.get(split.input[0]) or []) != 2:
            continue
        readers = [view.consumers.get(o, []) for o in split.output]
        if all(r.op_type == "Gather" and attrs(r).get("axis", 0) == 1 and r.input[0] == o
               for o, rs in zip(split.output, readers) for r in rs) and not set(split.output) & view.outputs:
            _gathers_unsplit(view, split, sizes, readers)
        elif any(len(r) != 1 for r in readers) or set(split.output) & view.outputs:
            continue
        else:
            nodes = _merged_step(view, split, sizes, [r[0] for r in readers])
            if nodes is None:
                continue
            for r in readers:
                view.drop(r[0])
            view.replace(split, nodes)
        _toposort(view)
        done += 1
    return done


def _gathers_unsplit(view, split, sizes, readers):
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for off, rs in zip(offsets, readers):
        for r in rs:
            index = view.const(r.input[1])
            r.input[0], r.input[1] = split.input[0], view.add_const((index + off).astype(index.dtype), "index")
    view.drop(split)


def _merged_step(view, split, sizes, steps):
    """One node doing every part's ``steps`` on the unsplit tensor, then the Split; or None."""
    first, x = steps[0], split.input[0]
    if any(s.op_type != first.op_type or sorted(a.SerializeToString() for a in s.attribute)
           != sorted(a.SerializeToString() for a in first.attribute) for s in steps):
        return None
    merged = view.fresh(x + "_merged")
    if first.op_type in UNARY:
        body = [helper.make_node(first.op_type, [x], [merged], **attrs(first))]
        out_sizes = sizes
    elif first.op_type == "Mul":
        body = _merged_mul(view, split, steps, x, merged)
        out_sizes = sizes
    elif first.op_type in ("Gemm", "MatMul"):
        parts = [_gemm_parts(s, view) for s in steps]
        if any(p is None for p in parts) or any(s.input[0] != o for s, o in zip(steps, split.output)):
            return None
        weight = np.zeros((sum(w.shape[0] for w, _ in parts), sum(w.shape[1] for w, _ in parts)))
        r = c = 0
        for w, _ in parts:
            weight[r:r + w.shape[0], c:c + w.shape[1]] = w
            r, c = r + w.shape[0], c + w.shape[1]
        body = [_gemm(view, x, weight, np.concatenate([b for _, b in parts]), merged)]
        out_sizes = [w.shape[1] for w, _ in parts]
    else:
        return None
    if body is None:
        return None
    return body + [_split(view, merged, list(out_sizes), [s.output[0] for s in steps])]


def _merged_mul(view, split, steps, x, merged):
    """Mul of every part by the same scalar, or by the same tensor shaped like each part (tiled)."""
    others = []
    for s, o in zip(steps, split.output):
        if list(s.input).count(o) != 1:
            return None
        others.append(s.input[1] if s.input[0] == o else s.input[0])
    if len(set(others)) != 1:
        return None
    other = others[0]
    if _scalar(view, other) is not None:
        return [helper.make_node("Mul", [x, other], [merged])]
    shape = view.shapes.get(other)
    if view.const(other) is not None or not shape or any(view.shapes.get(o) != shape for o in split.output):
        return None
    tiled = view.fresh(other + "_tiled")
    return [helper.make_node("Concat", [other] * len(steps), [tiled], axis=1),
            helper.make_node("Mul", [tiled, x], [merged])]


def split_outputs(view):
    """Task outputs gathered column by column from one Gemm -> the Gemm transposed, one Split.

    ``y = x W + b`` read as ``Gather(y, k)`` per output becomes ``(W^T x^T + b)``, shape
    (K, N), flattened and split in K equal parts: three nodes for any number of tasks."""
    done = 0
    opset = next((o.version for o in view.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for gemm in list(view.model.graph.node) if opset >= 18 else []:
        parts, readers = _gemm_parts(gemm, view), view.consumers.get(gemm.output[0], [])
        if parts is None or len(readers) < 2 or gemm.output[0] in view.outputs \
                or len(view.shapes.get(gemm.input[0]) or []) != 2:
            continue
        columns = [_gathered_column(view, r) for r in readers]
        if None in columns or len(set(columns)) != len(columns):
            continue
        w, b = parts
        flat = view.fresh(gemm.output[0] + "_flat")
        nodes = [helper.make_node("Gemm", [view.add_const(w[:, columns].T.astype(np.float32), "weight"), gemm.input[0],
                                           view.add_const(b[columns][:, None].astype(np.float32), "bias")],
                                  [flat + "_t"], transB=1),
                 helper.make_node("Reshape", [flat + "_t", view.add_const(np.array([-1], np.int64), "flat")], [flat]),
                 helper.make_node("Split", [flat], [r.output[0] for r in readers], axis=0, num_outputs=len(readers))]
        for r in readers:
            view.drop(r)
        view.replace(gemm, nodes)
        _toposort(view)
        done += 1
    return done


def _gathered_column(view, reader):
    """k when ``reader`` is Gather(y, k) of one column k on axis 1 into a graph output, else None."""
    index = view.const(reader.input[1]) if reader.op_type == "Gather" and len(reader.input) > 1 else None
    if index is None or index.ndim != 0 or attrs(reader).get("axis", 0) != 1 or reader.output[0] not in view.outputs:
        return None
    return int(index)


def _toposort(view):
    """Order the nodes so that each comes after what it reads; refresh the view."""
    g = view.model.graph
    produced = {o for n in g.node for o in n.output}
    ready = {i.name for i in g.input} | set(view.inits) | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready or i not in produced for i in node_inputs(n)):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("fold: the graph has a cycle")  # pragma: no cover - a bug in a fold
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    view.refresh()


FOLDS = (("pool_first", pool_first), ("linear_conv", fold_linear_conv), ("reshape_round_trip", drop_reshape_round_trip),
         ("divide", divide_as_multiply), ("sum_as_mean", sum_as_mean), ("scalar", sink_scalar),
         ("gemm_chain", fold_gemm_chain), ("duplicates", merge_duplicates), ("merge_gemms", merge_gemms),
         ("split", sink_split))
LAST = (("split_outputs", split_outputs),)  # once the others are done: it hides the heads' Gemms from them


def fold_student(model):
    """Apply every fold until none applies; returns (model, {fold: count}). ``model`` is changed in place."""
    view, counts = GraphView(model), Counter()
    changed = True
    while changed:
        changed = False
        for name, fold in FOLDS:
            n = fold(view)
            counts[name] += n
            changed = changed or n > 0
    for name, fold in LAST:
        counts[name] += fold(view)
    _drop_unused(model)
    return model, {name: counts[name] for name, _ in FOLDS + LAST}


def _drop_unused(model):
    prune_dead(model.graph)
    known = {n for node in model.graph.node for n in node.output} | {i.name for i in model.graph.input}
    keep = [vi for vi in model.graph.value_info if vi.name in known]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
