"""JAX / Flax teachers to ONNX through jax2onnx.

A teacher is either a Flax NNX module (called as ``module(x)``, put in eval mode
first) or a plain function with parameters ``fn(params, x)``; its parameters are
baked into the graph as initializers. Weights load from ``.msgpack`` (flax
serialization) or ``.npz`` files (keys ``a/b/c`` for nested parameters), never
from pickles.

Pitfalls handled here (docs/exporters.md):

* jax2onnx replaces ``nnx.max_pool`` / ``nnx.avg_pool`` with patched versions that
  accept the window arguments only as keywords: a positional call fails with
  ``TypeError: patched_max_pool() takes 1 positional argument``. And for
  ``max_pool`` without ``strides`` it uses the window as stride, while Flax uses
  stride 1, so the graph computes another function. The first is turned into an
  :class:`ExportError` saying what to write; the second is caught by the output
  check, whose message names the cause.
* Layout: Flax convolutions are NHWC. ``nchw=True`` gives the ONNX model an NCHW
  input (jax2onnx ``inputs_as_nchw``); otherwise ``amalgam.layout`` records NHWC.
  jax2onnx leaves stale NHWC ``value_info`` behind after its layout rewrite, so
  shapes are inferred again before saving.
* Flax ``padding="SAME"`` becomes ``auto_pad="SAME_UPPER"``, which onnx2torch cannot
  convert (branches cut from the teacher would fail); it is rewritten into explicit
  ``pads`` from the inferred input shapes (:func:`explicit_pads`).
"""

from importlib.metadata import version
from pathlib import Path

import flax
import jax
import numpy as np
from flax import nnx, serialization
from jax2onnx import to_onnx

from amalgam.exporters.check import (
    check_tasks,
    compare_outputs,
    fresh_shapes,
    max_abs_error,
    name_batch_axis,
    run_onnx,
    save_model,
)
from amalgam.exporters.metadata import stamp
from amalgam.runtime.errors import ExportError, ModelFileError, first_line
from amalgam.runtime.graph import dims

POOLING_HINT = (
    "flax max_pool/avg_pool called without strides=: Flax strides 1 by default, jax2onnx strides by the "
    "window; pass window_shape=, strides= and padding= as keywords"
)


def load_params(path):
    """Nested parameter dict from a ``.msgpack`` or ``.npz`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".msgpack":
            return serialization.msgpack_restore(path.read_bytes())
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as flat:
                return _unflatten({k: flat[k] for k in flat.files})
    except Exception as e:
        raise ModelFileError(f"{path}: cannot read JAX parameters: {first_line(e)}") from e
    raise ModelFileError(
        f"{path}: expected JAX parameters as .msgpack or .npz (no pickles), got {suffix or 'no suffix'!r}"
    )


def _unflatten(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _paths(tree, prefix=""):
    if isinstance(tree, dict):
        return {p for k, v in tree.items() for p in _paths(v, f"{prefix}{k}/")}
    return {prefix.rstrip("/")}


def _keys_as_str(tree):
    return {str(k): _keys_as_str(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def apply_params(model, params, loaded, source="weights"):
    """Put ``loaded`` into an NNX ``model`` (returns it) or check it against ``params``."""
    own = _keys_as_str(_pure_state(model) if params is None else params)
    missing, extra = _paths(own) - _paths(loaded), _paths(loaded) - _paths(own)
    if missing or extra:
        raise ExportError(
            f"{source}: parameter names do not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}"
        )
    if params is not None:
        return loaded
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, loaded)
    nnx.update(model, state)
    return model


def _pure_state(model):
    return nnx.to_pure_dict(nnx.state(model))


def _teacher_fn(model, params):
    if params is not None:
        return lambda x: model(params, x)
    if hasattr(model, "eval"):
        model.eval()
    return model


def convert(fn, shape, input_name, output_names, nchw, opset):
    """jax2onnx conversion with a dynamic batch axis."""
    try:
        return to_onnx(
            fn,
            [("batch", *shape[1:])],
            opset=opset,
            inputs_as_nchw=[0] if nchw else None,
            input_names=[input_name],
            output_names=output_names,
        )
    except TypeError as e:
        if "patched_" in str(e) and "positional" in str(e):
            raise ExportError(
                f"jax export: {e}; jax2onnx needs pooling arguments as keywords: "
                "nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding='VALID')"
            ) from e
        raise ExportError(f"jax export: jax2onnx cannot trace the model: {e}") from e
    except Exception as e:
        raise ExportError(f"jax export: jax2onnx cannot convert the model: {first_line(e)}") from e


def _same_pads(size, kernel, stride, dilation, upper):
    """(begin, end) padding of one spatial axis for auto_pad SAME_UPPER / SAME_LOWER."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (small, large) if upper else (large, small)


def explicit_pads(model):
    """Replace ``auto_pad=SAME_*`` on Conv and pooling nodes by explicit ``pads``."""
    from onnx import helper

    shapes = {v.name: dims(v) or [] for v in [*model.graph.input, *model.graph.value_info]}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        if node.op_type not in ("Conv", "MaxPool", "AveragePool") or mode not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        spatial = shapes.get(node.input[0], [])[2:]
        kernel = attrs.get("kernel_shape") or weights.get(node.input[1], [])[2:]
        if not spatial or not all(spatial) or len(kernel) != len(spatial):
            raise ExportError(
                f"jax export: node {node.name!r} pads 'SAME' on an input of unknown spatial size; "
                "give a fixed --input-shape"
            )
        n = len(spatial)
        strides, dilations = attrs.get("strides") or [1] * n, attrs.get("dilations") or [1] * n
        pairs = [_same_pads(*a, mode == b"SAME_UPPER") for a in zip(spatial, kernel, strides, dilations)]
        kept = [a for a in node.attribute if a.name != "auto_pad"]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("pads", [p[0] for p in pairs] + [p[1] for p in pairs])])
    return model


def export_jax(
    model,
    path,
    input_shape,
    params=None,
    nchw=False,
    opset=18,
    tasks=None,
    input_name="x",
    output_names=None,
    samples=4,
    seed=0,
):
    """Export an NNX module, or ``model(params, x)`` when ``params`` is given, to ONNX at ``path``.

    ``input_shape`` is the shape the model takes (NHWC for Flax convolutions; the
    batch axis is made dynamic). Returns a summary dict (path, outputs, layout,
    max_abs_error).
    """
    shape = tuple(int(d) for d in input_shape)
    if nchw and len(shape) != 4:
        raise ExportError(f"jax export: --nchw needs a rank-4 NHWC input, got shape {list(shape)}")
    fn = _teacher_fn(model, params)
    x = np.random.default_rng(seed).random((samples, *shape[1:]), dtype=np.float32)
    try:
        expected = jax.tree_util.tree_leaves(fn(x))
    except TypeError as e:
        raise ExportError(
            f"jax export: calling the model on an input of shape {[samples, *shape[1:]]} fails: {e}"
        ) from e
    names = list(output_names or (["logits"] if len(expected) == 1 else [f"output_{i}" for i in range(len(expected))]))
    if len(names) != len(expected):
        raise ExportError(f"jax export: {len(names)} output names given for {len(expected)} outputs")
    proto = convert(fn, shape, input_name, names, nchw, opset)
    name_batch_axis(proto)
    explicit_pads(fresh_shapes(proto))

    got = run_onnx(proto, {input_name: np.transpose(x, (0, 3, 1, 2)) if nchw else x})
    reference = {n: np.asarray(y) for n, y in zip(names, expected)}
    pools = {n.op_type for n in proto.graph.node} & {"MaxPool", "AveragePool"}
    compare_outputs(got, reference, "jax", hint=POOLING_HINT if pools else None)
    check_tasks(tasks, got, "jax")
    layout = "NCHW" if nchw else ("NHWC" if len(shape) == 4 else None)
    extra = {"layout": layout} if layout else {}
    stamp(
        proto,
        framework="jax",
        framework_version=jax.__version__,
        tasks=tasks,
        flax_version=flax.__version__,
        converter=f"jax2onnx {version('jax2onnx')}",
        input_name=input_name,
        **extra,
    )
    save_model(proto, path)
    return {"path": str(path), "outputs": names, "layout": layout, "max_abs_error": max_abs_error(got, reference)}
