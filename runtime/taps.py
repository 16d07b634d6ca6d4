"""Taps: intermediate tensors exposed as extra graph outputs.

Shapes come from running ONNX shape inference on the graph as it is, never from
``value_info`` that another converter wrote (it is dropped first).
"""

import difflib

import onnx
from onnx import helper, shape_inference

from amalgam.runtime.errors import UnknownTapError

WEIGHT_ELEMENTS = 1024  # initializers larger than this are weights: shape inference needs only their shapes


def infer_shapes(model):
    """``model`` with fresh value_info from strict shape inference.

    Inference runs on a skeleton of the graph whose large initializers (weights)
    are typed graph inputs instead: their shapes are all it needs, and the weights
    would be serialised at every call (most of its time on a 25M-parameter network).
    """
    skeleton = _skeleton(model)
    try:
        inferred = shape_inference.infer_shapes(skeleton, strict_mode=True, data_prop=True)
    except Exception:
        inferred = shape_inference.infer_shapes(skeleton, data_prop=True)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(inferred.graph.value_info)
    typed = {o.name: o for o in inferred.graph.output}
    for o in out.graph.output:
        o.CopyFrom(typed.get(o.name, o))
    return out


def _skeleton(model, limit=WEIGHT_ELEMENTS):
    """A copy of ``model`` without value_info, its initializers over ``limit`` elements as inputs."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    graph = skeleton.graph
    del graph.value_info[:]
    inputs = {i.name for i in graph.input}
    small = [t for t in graph.initializer if _elements(t) <= limit]
    for t in graph.initializer:
        if _elements(t) > limit and t.name not in inputs:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del graph.initializer[:]
    graph.initializer.extend(small)
    return skeleton


def _elements(tensor):
    count = 1
    for d in tensor.dims:
        count *= d
    return count


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
