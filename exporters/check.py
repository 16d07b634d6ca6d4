"""The check every framework exporter runs on its own result, and the safe write.

An exported teacher is only kept when ONNX Runtime, fed the same sample inputs,
gives the framework's own outputs back within a per-framework tolerance
(docs/exporters.md), judged by the one comparator, :func:`~amalgam.runtime.parity.compare`;
a miss is a :class:`~amalgam.runtime.errors.ParityError` (exit 1) naming every failing
output. The comparison runs with basic graph optimisation, so that fused kernels
cannot hide a difference. The file is written to a temporary name
in the destination folder and renamed, so a failed export leaves nothing behind.
"""

from pathlib import Path

import numpy as np

from amalgam.runtime.errors import ExportError, ParityError, first_line
from amalgam.runtime.files import atomic_path
from amalgam.runtime.parity import ATOL, RTOL, SRTOL, compare
from amalgam.runtime.session import make_session

# Absolute, relative and output-scale tolerance of ONNX Runtime vs the framework, per framework.
TOLERANCES = {
    "keras": (ATOL, RTOL, SRTOL),
    "jax": (ATOL, RTOL, SRTOL),
    "sklearn": (ATOL, RTOL, SRTOL),
}


def run_onnx(model, feeds):
    """``{output name: array}`` of ``model`` (ModelProto or path) on ``feeds``."""
    sess = make_session(model, opt_level="basic")
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def compare_outputs(got, expected, framework, what="output", hint=None):
    """Raise a :class:`ParityError` unless each ``expected[name]`` matches ``got[name]``.

    ``got`` and ``expected`` map output names to arrays; ``hint`` is appended to the
    message (a known pitfall that explains a mismatch). A missing output or a shape
    that differs is an :class:`ExportError` (exit 2: the export is another function).
    """
    atol, rtol, srtol = TOLERANCES[framework]
    suffix = f"; {hint}" if hint else ""
    for name, ref in expected.items():
        if name not in got:
            raise ExportError(f"{framework} export: the ONNX model has no {what} {name!r}; it has {sorted(got)}")
        if np.shape(got[name]) != np.shape(ref):  # another function altogether: the export is wrong
            raise ExportError(
                f"{framework} export: {what} {name!r} has shape {list(np.shape(got[name]))} in ONNX "
                f"Runtime but {list(np.shape(ref))} in {framework}" + suffix
            )
    try:
        title = f"{framework} export: ONNX Runtime vs {framework}"
        compare(expected, got, atol, rtol, title=title, srtol=srtol).raise_if_failed()
    except ParityError as e:
        message = str(e) if str(e).startswith(framework) else f"{framework} export: {e}"
        raise type(e)(message + suffix) from e


def check_tasks(tasks, outputs, framework):
    """Every task names an existing output, and its index or slice fits the last axis."""
    for task in tasks or ():
        name, out = task.get("name"), task.get("output")
        if out not in outputs:
            raise ExportError(
                f"{framework} export: task {name!r} names output {out!r}; the model's outputs are {sorted(outputs)}"
            )
        width = np.asarray(outputs[out]).shape[-1] if np.asarray(outputs[out]).ndim > 1 else 1
        last = task["slice"][1] - 1 if task.get("slice") else task.get("index") or 0
        if last >= width:
            raise ExportError(
                f"{framework} export: task {name!r} reads position {last} of output {out!r}, which has {width}"
            )


def max_abs_error(got, expected):
    """Largest absolute difference over all compared outputs (for reports)."""
    return max(
        float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(v, np.float64)))) for k, v in expected.items()
    )


def save_model(model, path):
    """Check ``model`` with the ONNX checker and write it to ``path`` through a temporary file."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"{path}: the exported model fails the ONNX checker: {first_line(e)}") from e
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ExportError(f"{path}: the folder {path.parent} does not exist")
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return path


def rename_tensor(model, old, new):
    """Rename tensor ``old`` to ``new`` everywhere in ``model``'s main graph."""
    if old == new:
        return model
    g = model.graph
    for node in g.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name == old:
            vi.name = new
    for init in g.initializer:
        if init.name == old:
            init.name = new
    return model


def name_batch_axis(model, name="batch"):
    """Call the first axis of every graph input and output ``name`` when it is dynamic."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name
    return model


def fresh_shapes(model):
    """Drop the converter's ``value_info`` (it can be stale after layout rewrites) and infer anew."""
    from onnx import shape_inference

    del model.graph.value_info[:]
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    model.graph.value_info.extend(inferred.graph.value_info)
    return model
