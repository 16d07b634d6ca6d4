"""Folds that merge (``exporters.fold``): duplicate nodes (:func:`merge_duplicates`),
Gemms reading one feature (:func:`merge_gemms`, :func:`sink_split`), task outputs from
one Split (:func:`split_outputs`), and the small rewrites that feed the Gemm folds
(:func:`divide_as_multiply`, :func:`sum_as_mean`, :func:`sink_scalar`,
:func:`drop_reshape_round_trip`)."""

import numpy as np
import onnx
from onnx import helper

from amalgam.exporters.fold.linear import gemm_parts, make_gemm, reduce_axes, reduce_node
from amalgam.exporters.fold.view import attrs, toposort


def merge_duplicates(view):
    """Nodes with the same op, domain, attributes and inputs computed once; returns the count."""
    seen, rename, keep, done = {}, {}, [], 0
    g = view.model.graph
    for node in g.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        key = (node.domain, node.op_type, tuple(_input_key(view, name) for name in node.input), _attribute_key(node))
        twin = seen.get(key)
        if (
            twin is not None
            and len(twin.output) == len(node.output)
            and not any(o in view.outputs for o in node.output)
        ):
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

    def rewrite(squeeze):
        if squeeze.op_type != "Squeeze" or squeeze.output[0] in view.outputs:
            return False
        reshape = view.producer.get(squeeze.input[0])
        if (
            reshape is None
            or reshape.op_type not in ("Reshape", "Unsqueeze")
            or not view.only_use(reshape.output[0], squeeze)
        ):
            return False
        x, out = view.shapes.get(reshape.input[0]), view.shapes.get(squeeze.output[0])
        if not x or x != out or None in x[1:]:
            return False
        _bypass(view, squeeze, reshape.input[0])
        view.drop(squeeze)
        view.drop(reshape)
        return True

    return view.rewrite_each(rewrite)


def divide_as_multiply(view):
    """Div(x, c) by a constant -> Mul(x, 1 / c), so the scale can fold into a Gemm."""

    def rewrite(div):
        c = view.const(div.input[1]) if div.op_type == "Div" else None
        if c is None or c.dtype.kind != "f" or not np.all(c):
            return False
        view.replace(
            div,
            [
                helper.make_node(
                    "Mul", [div.input[0], view.add_const((1.0 / c).astype(c.dtype), "scale")], list(div.output)
                )
            ],
        )
        return True

    return view.rewrite_each(rewrite)


def sum_as_mean(view):
    """ReduceSum over axes of static size K -> ReduceMean * K (the mean is then shared, K folded)."""

    def rewrite(node):
        found = reduce_axes(node, view) if node.op_type == "ReduceSum" else None
        shape = view.shapes.get(node.input[0]) or []
        if found is None or any(shape[a] is None for a in found[0]):
            return False
        mean = view.fresh(node.output[0])
        size = float(np.prod([shape[a] for a in found[0]]))
        view.replace(
            node,
            [
                reduce_node(
                    view, helper.make_node("ReduceMean", ["x", "axes"], ["y"]), node.input[0], found[0], found[1], mean
                ),
                helper.make_node("Mul", [mean, view.add_const(np.array(size, np.float32), "size")], list(node.output)),
            ],
        )
        return True

    return view.rewrite_each(rewrite)


def sink_scalar(view):
    """Mul(a, Mul(b, k)) -> Mul(Mul(a, b), k) for a constant scalar k, moving k toward a Gemm."""

    def rewrite(outer):
        if outer.op_type != "Mul":
            return False
        for j in (0, 1):
            inner = view.producer.get(outer.input[j])
            other = outer.input[1 - j]
            if (
                inner is None
                or inner.op_type != "Mul"
                or view.const(other) is not None
                or not view.only_use(inner.output[0], outer)
            ):
                continue
            k = next((i for i in (0, 1) if _scalar(view, inner.input[i]) is not None), None)
            if k is None:
                continue
            mid = view.fresh(outer.output[0])
            view.replace(
                outer,
                [
                    helper.make_node("Mul", [other, inner.input[1 - k]], [mid]),
                    helper.make_node("Mul", [mid, inner.input[k]], list(outer.output)),
                ],
            )
            view.drop(inner)
            return True
        return False

    return view.rewrite_each(rewrite)


def merge_gemms(view):
    """Gemms reading the same (N, C) feature (the gates' squeezes, heads) -> one Gemm and a Split."""
    groups = {}
    for node in view.model.graph.node:
        if gemm_parts(node, view) is not None and len(view.shapes.get(node.input[0]) or []) == 2:
            groups.setdefault(node.input[0], []).append(node)
    done = 0
    for x, nodes in groups.items():
        if len(nodes) < 2:
            continue
        parts = [gemm_parts(n, view) for n in nodes]
        merged = view.fresh(x + "_merged")
        gemm = make_gemm(
            view, x, np.concatenate([w for w, _ in parts], 1), np.concatenate([b for _, b in parts]), merged
        )
        split = _split(view, merged, [w.shape[1] for w, _ in parts], [n.output[0] for n in nodes])
        for n in nodes[1:]:
            view.drop(n)
        view.replace(nodes[0], [gemm, split])
        done += 1
    if done:
        toposort(view)
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
        if (
            sizes is None
            or attrs(split).get("axis", 0) not in (1, -1)
            or len(view.shapes.get(split.input[0]) or []) != 2
        ):
            continue
        readers = [view.consumers.get(o, []) for o in split.output]
        if (
            all(
                r.op_type == "Gather" and attrs(r).get("axis", 0) == 1 and r.input[0] == o
                for o, rs in zip(split.output, readers)
                for r in rs
            )
            and not set(split.output) & view.outputs
        ):
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
        toposort(view)
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
    if any(
        s.op_type != first.op_type
        or sorted(a.SerializeToString() for a in s.attribute) != sorted(a.SerializeToString() for a in first.attribute)
        for s in steps
    ):
        return None
    merged = view.fresh(x + "_merged")
    if first.op_type in UNARY:
        body = [helper.make_node(first.op_type, [x], [merged], **attrs(first))]
        out_sizes = sizes
    elif first.op_type == "Mul":
        body = _merged_mul(view, split, steps, x, merged)
        out_sizes = sizes
    elif first.op_type in ("Gemm", "MatMul"):
        parts = [gemm_parts(s, view) for s in steps]
        if any(p is None for p in parts) or any(s.input[0] != o for s, o in zip(steps, split.output)):
            return None
        weight = np.zeros((sum(w.shape[0] for w, _ in parts), sum(w.shape[1] for w, _ in parts)))
        r = c = 0
        for w, _ in parts:
            weight[r : r + w.shape[0], c : c + w.shape[1]] = w
            r, c = r + w.shape[0], c + w.shape[1]
        body = [make_gemm(view, x, weight, np.concatenate([b for _, b in parts]), merged)]
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
    return [
        helper.make_node("Concat", [other] * len(steps), [tiled], axis=1),
        helper.make_node("Mul", [tiled, x], [merged]),
    ]


def split_outputs(view):
    """Task outputs gathered column by column from one Gemm -> the Gemm transposed, one Split.

    ``y = x W + b`` read as ``Gather(y, k)`` per output becomes ``(W^T x^T + b)``, shape
    (K, N), flattened and split in K equal parts: three nodes for any number of tasks."""
    done = 0
    opset = next((o.version for o in view.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for gemm in list(view.model.graph.node) if opset >= 18 else []:
        parts, readers = gemm_parts(gemm, view), view.consumers.get(gemm.output[0], [])
        if (
            parts is None
            or len(readers) < 2
            or gemm.output[0] in view.outputs
            or len(view.shapes.get(gemm.input[0]) or []) != 2
        ):
            continue
        columns = [_gathered_column(view, r) for r in readers]
        if None in columns or len(set(columns)) != len(columns):
            continue
        w, b = parts
        flat = view.fresh(gemm.output[0] + "_flat")
        nodes = [
            helper.make_node(
                "Gemm",
                [
                    view.add_const(w[:, columns].T.astype(np.float32), "weight"),
                    gemm.input[0],
                    view.add_const(b[columns][:, None].astype(np.float32), "bias"),
                ],
                [flat + "_t"],
                transB=1,
            ),
            helper.make_node("Reshape", [flat + "_t", view.add_const(np.array([-1], np.int64), "flat")], [flat]),
            helper.make_node("Split", [flat], [r.output[0] for r in readers], axis=0, num_outputs=len(readers)),
        ]
        for r in readers:
            view.drop(r)
        view.replace(gemm, nodes)
        toposort(view)
        done += 1
    return done


def _gathered_column(view, reader):
    """k when ``reader`` is Gather(y, k) of one column k on axis 1 into a graph output, else None."""
    index = view.const(reader.input[1]) if reader.op_type == "Gather" and len(reader.input) > 1 else None
    if index is None or index.ndim != 0 or attrs(reader).get("axis", 0) != 1 or reader.output[0] not in view.outputs:
        return None
    return int(index)
