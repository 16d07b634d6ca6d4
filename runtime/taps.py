"""Taps: intermediate tensors exposed as extra graph outputs.

Shapes come from running ONNX shape inference on the graph as it is, never from
``value_info`` that another converter wrote (it is dropped first).
"""

import difflib

import onnx
from onnx import shape_inference

from runtime.errors import UnknownTapError


def infer_shapes(model):
    """``model`` with fresh value_info from strict shape inference."""
    clean = onnx.ModelProto()
    clean.CopyFrom(model)
    del clean.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(clean, strict_mode=True, data_prop=True)
    except Exception:
        return shape_inference.infer_shapes(clean, data_prop=True)


def tensor_names(model):
    """Every tensor a node produces, in graph order (inputs and initializers excluded)."""
    return [out for node in model.graph.node for out in node.output if out]


def closest_names(model, name, n=5):
    return difflib.get_close_matches(name, tensor_names(model), n=n, cutoff=0.3)


def require_tensor(model, name, what="tap"):
    """Raise :class:`UnknownTapError` naming the closest existing tensors."""
    known = set(tensor_names(model)) | {i.name for i in model.graph.input}
    if name not in known:
        hint = closest_names(model, name)
        raise UnknownTapError(
            f"unknown {what} {name!r}: the graph {model.graph.name!r} has no such tensor"
            + (f"; closest: {', '.join(hint)}" if hint else "")
        )


def add_taps(model, names):
    """A copy of ``model`` whose outputs are its own outputs followed by ``names``."""
    for name in names:
        require_tensor(model, name)
    inferred = infer_shapes(model)
    info = {v.name: v for v in inferred.graph.value_info}
    existing = {o.name for o in inferred.graph.output}
    for name in names:
        if name in existing:
            continue
        vi = info.get(name) or onnx.helper.make_empty_tensor_value_info(name)
        inferred.graph.output.append(vi)
        existing.add(name)
    return inferred


def run_with_taps(session, feeds, names):
    """Run ``session`` and return ``{tap name: array}``; every tap must come back."""
    returned = {o.name for o in session.get_outputs()}
    missing = [n for n in names if n not in returned]
    if missing:
        raise UnknownTapError(f"the session does not return the taps {missing}; add them with add_taps first")
    values = session.run(list(names), feeds)
    return dict(zip(names, values))
