"""Keras / TensorFlow teachers to ONNX through tf2onnx.

Pitfalls handled here (docs/exporters.md):

* Keras 3 vs tf2onnx: ``tf2onnx.convert.from_keras`` reads Keras 2 internals and
  fails on Keras 3 models (``KeyError: 'keras_tensor_…'``). We never call it: the
  model is wrapped in a ``tf.function`` with an explicit input signature built from
  the model's own input shape, frozen (``tf2onnx.tf_loader.from_function``) and
  converted with ``tf2onnx.convert.from_graph_def``. This works for Keras 3
  ``.keras`` files, legacy HDF5 files and tf_keras models.
* Layout: Keras image models are NHWC (channels_last). With ``nchw=True`` the ONNX
  input is NCHW (tf2onnx ``inputs_as_nchw``), as PyTorch teachers take it; otherwise
  the input layout is recorded as ``amalgam.layout = "NHWC"`` so the runtime feeds
  and taps it accordingly.
* Captured constants: a layer may hold a tensor computed in eager mode (Keras 3
  ``Normalization`` keeps ``mean`` and ``variance`` so, as in keras.applications'
  EfficientNet), which the traced function captures as an extra input.
  ``from_function`` would make each one an ONNX graph input that nobody feeds; here
  the function is frozen with only the image as input, so they fold into constants.
  A capture that cannot fold (a lookup table) is refused, naming its layer.
* Grouped convolutions (ConvNeXt's depthwise ones, any ``Conv2D(groups>1)``): Keras 3's
  TensorFlow backend runs them in a ``tf.function(jit_compile=True)``, because TensorFlow's
  CPU kernels lack them. tf2onnx cannot inline an XLA function and leaves a
  ``StatefulPartitionedCall`` that ONNX Runtime cannot load (onnx/tensorflow-onnx#2099).
  The model is traced with that one ``tf.function`` call made without ``jit_compile``
  (:func:`_grouped_convolutions_inlined`): the call inlines and converts to an ONNX
  ``Conv`` with ``group``; the check below holds the result to Keras's own outputs.
* Check: ONNX Runtime against Keras on sample inputs (``exporters.check.compare_outputs``,
  i.e. ``runtime.parity.compare``); a tolerance miss is a ``ParityError`` (exit 1).
"""

import contextlib
import importlib
import os
import re
from pathlib import Path

# Before TensorFlow loads: C++ logs below FATAL off, and oneDNN off (its banner, and its
# fused kernels reorder float sums, so the reference output would move with the CPU).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tf2onnx import tf_loader  # noqa: E402

from amalgam.exporters.check import (
    check_tasks,
    compare_outputs,
    fresh_shapes,
    max_abs_error,
    name_batch_axis,  # noqa: E402
    rename_tensor,
    run_onnx,
    save_model,
)
from amalgam.exporters.metadata import stamp  # noqa: E402
from amalgam.runtime.errors import ExportError, ModelFileError  # noqa: E402
from amalgam.runtime.quiet import framework_output  # noqa: E402

SUFFIXES = (".keras", ".h5", ".hdf5")
RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")  # "ValueError: ..." in a traced stack


def load_keras(path):
    """A Keras model from a ``.keras`` (Keras 3) or legacy ``.h5``/``.hdf5`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.suffix.lower() not in SUFFIXES:
        raise ModelFileError(
            f"{path}: expected a Keras model file ({', '.join(SUFFIXES)}), got {path.suffix or 'no suffix'!r}"
        )
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise ModelFileError(f"{path}: Keras cannot load it: {_first_line(e)}") from e


def input_layout(model, shape):
    """'NHWC' or 'NCHW' for image inputs (rank 4), else None."""
    if len(shape) != 4:
        return None
    formats = {getattr(layer, "data_format", None) for layer in _layers(model)} - {None}
    return "NCHW" if formats == {"channels_first"} else "NHWC"


def _layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


def model_input_shape(model, input_shape=None):
    """The model's input shape with a free batch axis, e.g. ``(None, 28, 28, 1)``."""
    if input_shape is not None:
        return (None, *tuple(input_shape)[1:])
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ExportError(
            "keras export: the model has no defined input; give its input shape (e.g. --input-shape 1,28,28,1)"
        )
    if len(inputs) != 1:
        raise ExportError(f"keras export: the model has {len(inputs)} inputs; a teacher takes one image tensor")
    return (None, *tuple(inputs[0].shape)[1:])


class _WithoutJit:
    """TensorFlow, as the Keras backend's ``nn`` module sees it, with ``tf.function`` ignoring ``jit_compile``."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def function(self, *args, jit_compile=None, **kwargs):
        return self._module.function(*args, **kwargs)


@contextlib.contextmanager
def _grouped_convolutions_inlined():
    """While tracing: Keras 3's grouped convolution without its XLA ``tf.function`` (module doc)."""
    try:
        backend_nn = importlib.import_module("keras.src.backend.tensorflow.nn")
    except ImportError:  # Keras 2 / tf_keras: no such wrapper
        yield
        return
    original = backend_nn.tf
    backend_nn.tf = _WithoutJit(original)
    try:
        yield
    finally:
        backend_nn.tf = original


def trace(model, shape, input_name="x"):
    """The model as a concrete ``tf.function`` of one float32 input of ``shape``, in inference mode."""
    signature = [tf.TensorSpec(shape, tf.float32, name=input_name)]
    function = tf.function(lambda x: model(x, training=False), input_signature=signature)
    try:
        with _grouped_convolutions_inlined():
            return function.get_concrete_function(*signature)
    except Exception as e:
        raise ExportError(
            f"keras export: the model does not run on an input of shape {list(shape)}: {_first_line(e)}"
        ) from e


def freeze(model, concrete, input_name="x"):
    """A TensorFlow graph with weights and captured eager tensors as constants, and its output names.

    Only the image is an input, so tf2onnx makes no graph input of a capture; a capture
    left over after freezing (neither a variable nor a plain tensor) is refused.
    """
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    try:
        graph_def = tf_loader.from_function(concrete, [f"{input_name}:0"], outputs)
    except Exception as e:
        raise ExportError(f"keras export: TensorFlow cannot freeze the model: {_first_line(e)}") from e
    leftover = [n.name for n in graph_def.node if n.op == "Placeholder" and n.name != input_name]
    if leftover:
        raise ExportError(
            f"keras export: {_capture_owner(model, concrete, leftover[0])} holds {leftover[0]!r}, "
            f"which cannot be folded into the ONNX graph as a constant (the ONNX model would need it as a second input)"
        )
    return graph_def, outputs


def _capture_owner(model, concrete, placeholder):
    """``layer 'NAME'`` for the layer holding what ``placeholder`` captured, else the placeholder's TF name scope."""
    captured = {inner.name.split(":")[0]: outer for outer, inner in concrete.graph.captures}.get(placeholder)
    for layer in [model, *_layers(model)] if captured is not None else ():
        if any(_is(value, captured) for value in vars(layer).values()):
            return f"layer {layer.name!r}"
    return f"the layer at {placeholder.rsplit('/', 2)[0]!r}"


def _is(value, captured):
    """``value`` is the captured tensor, or the TensorFlow resource (a lookup table) whose handle it is."""
    try:
        return value is captured or getattr(value, "resource_handle", None) is captured
    except Exception:
        return False


def convert(model, shape, input_name="x", nchw=False, opset=18):
    """tf2onnx conversion of ``model`` through a frozen tf.function with an input signature."""
    concrete = trace(model, shape, input_name)
    graph_def, outputs = freeze(model, concrete, input_name)
    try:
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            name=concrete.name,
            input_names=[f"{input_name}:0"],
            output_names=outputs,
            opset=opset,
            inputs_as_nchw=[input_name] if nchw else None,
            tensors_to_rename={f"{input_name}:0": input_name},
        )
    except Exception as e:
        raise ExportError(f"keras export: tf2onnx cannot convert the model: {_first_line(e)}") from e
    return _erfc_as_one_minus_erf(proto)


def _erfc_as_one_minus_erf(proto):
    """Each ``Erfc`` tf2onnx leaves (TensorFlow's exact GELU, ``0.5 x erfc(-x / sqrt 2)``: ConvNeXt)
    as ``1 - Erf``: ONNX has Erf and no Erfc."""
    nodes = []
    for node in proto.graph.node:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        one = onnx.helper.make_tensor(f"{node.name}/one", onnx.TensorProto.FLOAT, [], [1.0])
        proto.graph.initializer.append(one)
        erf = onnx.helper.make_node("Erf", list(node.input), [f"{node.name}/erf"], name=f"{node.name}/Erf")
        nodes += [erf, onnx.helper.make_node("Sub", [one.name, erf.output[0]], list(node.output), name=node.name)]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _first_line(error):
    """The reason for ``error`` in one line, past TensorFlow's ``in user code:`` stack and
    Keras's ``Exception encountered when calling ...`` header."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    if lines and lines[0] == "in user code:":
        raised = [i for i, line in enumerate(lines) if RAISED.match(line)]
        lines = lines[raised[-1] :] if raised else lines[-1:]
    if len(lines) > 1 and "Exception encountered when calling" in lines[0]:
        lines = [f"{lines[0].split(':')[0]}: {lines[1]}"]
    return lines[0] if lines else type(error).__name__


def _as_list(y):
    if isinstance(y, dict):
        return [y[k] for k in sorted(y)]
    return list(y) if isinstance(y, (list, tuple)) else [y]


def export_keras(
    model,
    path,
    input_shape=None,
    nchw=False,
    opset=18,
    tasks=None,
    input_name="x",
    output_names=None,
    samples=4,
    seed=0,
    log_path=None,
):
    """Export a Keras model (or a path to one) to ONNX at ``path``; checked and stamped.

    ``input_shape`` overrides the model's own input shape (batch axis ignored);
    ``output_names`` name the outputs in order (default ``logits`` for one output,
    ``output_0..`` for several). What Keras, TensorFlow and tf2onnx print goes to
    ``log_path`` (appended), or to the ``amalgam.framework`` logger at DEBUG
    (:mod:`~amalgam.runtime.quiet`). Returns a summary dict (path, outputs, layout, max_abs_error).
    """
    with framework_output(f"keras export to {path}", log_path):
        if isinstance(model, (str, Path)):
            model = load_keras(model)
        shape = model_input_shape(model, input_shape)
        layout = input_layout(model, shape)
        if nchw and layout != "NHWC":
            raise ExportError(
                f"keras export: --nchw needs an NHWC image input; the model's input is {list(shape)} ({layout or 'not an image'})"
            )
        proto = convert(model, shape, input_name, nchw, opset)
        x = np.random.default_rng(seed).random((samples, *shape[1:]), dtype=np.float32)
        expected = [np.asarray(y) for y in _as_list(model(x, training=False))]
    names = list(output_names or (["logits"] if len(expected) == 1 else [f"output_{i}" for i in range(len(expected))]))
    if len(names) != len(expected):
        raise ExportError(f"keras export: {len(names)} output names given for {len(expected)} outputs")
    for out, name in zip(list(proto.graph.output), names):
        rename_tensor(proto, out.name, name)
    name_batch_axis(proto)
    fresh_shapes(proto)

    got = _run(proto, {input_name: np.transpose(x, (0, 3, 1, 2)) if nchw else x})
    reference = dict(zip(names, expected))
    compare_outputs(got, reference, "keras")
    check_tasks(tasks, got, "keras")
    layout = "NCHW" if nchw else layout
    extra = {"layout": layout} if layout else {}
    stamp(
        proto,
        framework="keras",
        framework_version=keras.__version__,
        tasks=tasks,
        tensorflow_version=tf.__version__,
        converter=f"tf2onnx {tf2onnx.__version__}",
        input_name=input_name,
        **extra,
    )
    save_model(proto, path)
    return {"path": str(path), "outputs": names, "layout": layout, "max_abs_error": max_abs_error(got, reference)}


def _run(proto, feeds):
    """ONNX Runtime's outputs of the converted model; a model it cannot load or run, or one where
    tf2onnx left a TensorFlow op unconverted, is an :class:`ExportError`."""
    left = [n for n in proto.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if left:
        raise ExportError(
            f"keras export: tf2onnx left TensorFlow op {left[0].op_type!r} unconverted at node {left[0].name!r} "
            f"({len(left)} such node(s)); ONNX has no such op. Replace the layer that makes it, or convert the "
            f"model to ONNX with a tool that handles it and pass the .onnx file to `amalgam inspect`"
        )
    try:
        return run_onnx(proto, feeds)
    except Exception as e:
        raise ExportError(f"keras export: ONNX Runtime cannot run the converted model: {_first_line(e)}") from e
