"""Folds of linear pieces (``exporters.fold``): a global pool moved above what commutes
with it (:func:`pool_first`), a 1x1 conv folded into the next conv
(:func:`fold_linear_conv`), Gemm chains and constant column scales folded into one Gemm
(:func:`fold_gemm_chain`)."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amalgam.exporters.fold.view import SPATIAL, attrs


def _is_pointwise_conv(node, view):
    """A 1x1, stride 1, unpadded, ungrouped Conv with constant weights (and bias)."""
    if node.op_type != "Conv" or view.const(node.input[1]) is None:
        return False
    if len(node.input) > 2 and node.input[2] and view.const(node.input[2]) is None:
        return False
    a = attrs(node)
    w = view.const(node.input[1])
    return (
        w.ndim == 4
        and w.shape[2:] == (1, 1)
        and a.get("group", 1) == 1
        and all(v == 1 for v in a.get("strides", [1]))
        and all(v == 1 for v in a.get("dilations", [1]))
        and not any(a.get("pads", [0]))
        and a.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")
    )


def _bias(view, node, channels):
    if len(node.input) > 2 and node.input[2]:
        return view.const(node.input[2]).astype(np.float64)
    return np.zeros(channels)


def reduce_axes(node, view):
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


def reduce_node(view, like, x, axes, keepdims, out):
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
    nodes = [reduce_node(view, reduce, prev.input[0], inner, keepdims, pooled)]
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
        nodes = [reduce_node(view, reduce, big, axes, keepdims, pooled)]
        if not keepdims:
            squeezed = view.fresh(small)
            nodes.append(
                helper.make_node("Squeeze", [small, view.add_const(np.array(axes, np.int64), "axes")], [squeezed])
            )
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
    nodes = [reduce_node(view, reduce, prev.input[0], axes, keepdims, pooled)]
    if keepdims:
        nodes.append(
            helper.make_node(
                "Conv",
                [pooled, prev.input[1], view.add_const(b.astype(np.float32), "bias")],
                [reduce.output[0]],
                kernel_shape=[1, 1],
            )
        )
    else:
        nodes.append(
            helper.make_node(
                "Gemm",
                [pooled, view.add_const(w[:, :, 0, 0], "weight"), view.add_const(b.astype(np.float32), "bias")],
                [reduce.output[0]],
                transB=1,
            )
        )
    return nodes


POOL_MOVES = {"Transpose": _pool_past_transpose, "Mul": _pool_past_mul, "Conv": _pool_past_conv}


def pool_first(view):
    """Move each global pool one step up past a Transpose, gate Mul or 1x1 Conv; returns the count."""
    done = 0
    for reduce in list(view.model.graph.node):
        if reduce.op_type not in ("ReduceMean", "ReduceSum"):
            continue
        found = reduce_axes(reduce, view)
        prev = view.producer.get(reduce.input[0])
        if (
            found is None
            or prev is None
            or prev.op_type not in POOL_MOVES
            or not view.only_use(reduce.input[0], reduce)
        ):
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
    from amalgam.runtime.session import make_session

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
            nodes = [
                _conv_like(second, first.input[0], weight, None, name, view),
                helper.make_node(
                    "Add",
                    [name, view.add_const((extra + b2[:, None, None])[None].astype(np.float32), "bias_map")],
                    [second.output[0]],
                ),
            ]
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


def gemm_parts(node, view):
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
        b = np.broadcast_to(
            c.astype(np.float64).reshape(-1) if c.size == w.shape[1] else c.astype(np.float64), (w.shape[1],)
        ).copy()
    return w, b


def make_gemm(view, x, w, b, out):
    return helper.make_node(
        "Gemm",
        [x, view.add_const(w.T.astype(np.float32), "weight"), view.add_const(b.astype(np.float32), "bias")],
        [out],
        transB=1,
    )


def fold_gemm_chain(view):
    """Gemm(Gemm(x)) -> Gemm(x); Gemm(x * c) -> Gemm(x) for a constant per-column c; returns the count."""
    done = 0
    for second in list(view.model.graph.node):
        parts = gemm_parts(second, view)
        prev = view.producer.get(second.input[0])
        if parts is None or prev is None or not view.only_use(second.input[0], second):
            continue
        w2, b2 = parts
        rank = len(view.shapes.get(second.input[0]) or [])
        if prev.op_type in ("Gemm", "MatMul") and rank == 2 and gemm_parts(prev, view) is not None:
            w1, b1 = gemm_parts(prev, view)
            node = make_gemm(view, prev.input[0], w1 @ w2, b1 @ w2 + b2, second.output[0])
        elif prev.op_type == "Mul" and rank == 2:
            scaled = _column_scale(view, prev, w2.shape[0])
            if scaled is None:
                continue
            x, c = scaled
            node = make_gemm(view, x, c[:, None] * w2, b2, second.output[0])
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
