"""Keras / TensorFlow teachers to ONNX through tf2onnx.

Pitfalls handled here (docs/exporters.md):

* Keras 3 vs tf2onnx: ``tf2onnx.convert.from_keras`` reads Keras 2 internals and
  fails on Keras 3 models (``KeyError: 'keras_tensor_…'``). We never call it: the
  model is wrapped in a ``tf.function`` with an explicit input signature built from
  the model's own input shape, and converted with ``tf2onnx.convert.from_function``.
  This works for Keras 3 ``.keras`` files, legacy HDF5 files and tf_keras models.
* Layout: Keras image models are NHWC (channels_last). With ``nchw=True`` the ONNX
  input is NCHW (tf2onnx ``inputs_as_nchw``), as PyTorch teachers take it; otherwise
  the input layout is recorded as ``amalgam.layout = "NHWC"`` so the runtime feeds
  and taps it accordingly.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN fused kernels reorder float sums: the reference output would move with the CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

from exporters.check import (check_tasks, compare_outputs, fresh_shapes, max_abs_error, name_batch_axis,  # noqa: E402
                             rename_tensor, run_onnx, save_model)
from exporters.metadata import stamp  # noqa: E402
from runtime.errors import ExportError, ModelFileError, first_line  # noqa: E402

SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras(path):
    """A Keras model from a ``.keras`` (Keras 3) or legacy ``.h5``/``.hdf5`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.suffix.lower() not in SUFFIXES:
        raise ModelFileError(f"{path}: expected a Keras model file ({', '.join(SUFFIXES)}), got {path.suffix or 'no suffix'!r}")
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise ModelFileError(f"{path}: Keras cannot load it: {first_line(e)}") from e


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
        raise ExportError("keras export: the model has no defined input; give its input shape (e.g. --input-shape 1,28,28,1)")
    if len(inputs) != 1:
        raise ExportError(f"keras export: the model has {len(inputs)} inputs; a teacher takes one image tensor")
    return (None, *tuple(inputs[0].shape)[1:])


def convert(model, shape, input_name="x", nchw=False, opset=18):
    """tf2onnx conversion of ``model`` through a tf.function with an input signature."""
    signature = [tf.TensorSpec(shape, tf.float32, name=input_name)]
    function = tf.function(lambda x: model(x, training=False), input_signature=signature)
    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset, inputs_as_nchw=[input_name] if nchw else None
        )
    except Exception as e:
        raise ExportError(f"keras export: tf2onnx cannot convert the model: {first_line(e)}") from e
    return proto


def _as_list(y):
    if isinstance(y, dict):
        return [y[k] for k in sorted(y)]
    return list(y) if isinstance(y, (list, tuple)) else [y]


def export_keras(model, path, input_shape=None, nchw=False, opset=18, tasks=None, input_name="x",
                 output_names=None, samples=4, seed=0):
    """Export a Keras model (or a path to one) to ONNX at ``path``; checked and stamped.

    ``input_shape`` overrides the model's own input shape (batch axis ignored);
    ``output_names`` name the outputs in order (default ``logits`` for one output,
    ``output_0..`` for several). Returns a summary dict (path, outputs, layout,
    max_abs_error).
    """
    if isinstance(model, (str, Path)):
        model = load_keras(model)
    shape = model_input_shape(model, input_shape)
    layout = input_layout(model, shape)
    if nchw and layout != "NHWC":
        raise ExportError(f"keras export: --nchw needs an NHWC image input; the model's input is {list(shape)} ({layout or 'not an image'})")
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

    feed = np.transpose(x, (0, 3, 1, 2)) if nchw else x
    got = run_onnx(proto, {input_name: feed})
    reference = dict(zip(names, expected))
    compare_outputs(got, reference, "keras")
    check_tasks(tasks, got, "keras")
    layout = "NCHW" if nchw else layout
    extra = {"layout": layout} if layout else {}
    stamp(proto, framework="keras", framework_version=keras.__version__, tasks=tasks, tensorflow_version=tf.__version__,
          converter=f"tf2onnx {tf2onnx.__version__}", input_name=input_name, **extra)
    save_model(proto, path)
    return {"path": str(path), "outputs": names, "layout": layout,
            "max_abs_error": max_abs_error(got, reference)}
