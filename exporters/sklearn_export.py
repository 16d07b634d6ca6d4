"""scikit-learn teachers to ONNX through skl2onnx.

A scikit-learn model has no usable inner structure, so it teaches through its
outputs alone (an output-only teacher). Outputs of a classifier: ``label``,
``probabilities`` (a plain ``[batch, classes]`` tensor: ZipMap is off) and
``logits`` = log(probabilities), so that a multi-class task reads it like any
network's logits (softmax(logits) == probabilities). A regressor gives ``variable``.

Pitfalls handled here (docs/exporters.md):

* double inputs: skl2onnx types the ONNX input after the sample it is given, and a
  float64 sample (numpy's default) makes a ``tensor(double)`` input that no image
  pipeline feeds. The input is always declared float32.
* Model files: ``.skops`` files load with skops, trusting only scikit-learn's and
  numpy's own types; pickle / joblib files run arbitrary code when loaded and are
  read only with ``trust_pickle=True``, with a warning.
* Image teachers: ``input_shape`` (e.g. ``1,28,28``) prepends a Reshape so that the
  ONNX model takes images ``[batch, *input_shape]`` and flattens them, as the model
  was trained on flattened pixels.
"""

import warnings
from pathlib import Path

import numpy as np
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import is_classifier

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

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")
LOG_FLOOR = 1e-7


def load_sklearn(path, trust_pickle=False):
    """An estimator from a ``.skops`` file, or from a pickle/joblib file when trusted."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".skops":
        return _load_skops(path)
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise ModelFileError(
                f"{path}: a {suffix} file runs arbitrary code when loaded; save the model with "
                "skops.io.dump as .skops, or pass --trust-pickle if you trust its source"
            )
        warnings.warn(
            f"{path}: loading a pickle runs any code it holds; do this only for files you trust", stacklevel=2
        )
        import joblib

        try:
            return joblib.load(path)
        except Exception as e:
            raise ModelFileError(f"{path}: cannot unpickle it: {e}") from e
    raise ModelFileError(
        f"{path}: expected a scikit-learn model as .skops (or {', '.join(PICKLE_SUFFIXES)} with "
        f"--trust-pickle), got {suffix or 'no suffix'!r}"
    )


def _load_skops(path):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as e:
        raise ModelFileError(f"{path}: not a skops file: {first_line(e)}") from e
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise ModelFileError(f"{path}: the skops file holds types outside scikit-learn and numpy: {foreign}")
    return sio.load(str(path), trusted=untrusted)


def convert(model, n_features, input_name, opset):
    """skl2onnx conversion with one float32 ``[batch, n_features]`` input and ZipMap off."""
    options = {"zipmap": False} if is_classifier(model) else None
    try:
        return skl2onnx.to_onnx(
            model,
            initial_types=[(input_name, FloatTensorType([None, n_features]))],
            target_opset={"": opset, "ai.onnx.ml": 3},
            options=options,
        )
    except Exception as e:
        raise ExportError(f"sklearn export: skl2onnx cannot convert {type(model).__name__}: {first_line(e)}") from e


def add_logits(proto, n_classes, probabilities="probabilities", logits="logits"):
    """Append ``logits = log(max(probabilities, 1e-7))`` as an output."""
    from onnx import TensorProto, helper, numpy_helper

    floor = numpy_helper.from_array(np.array(LOG_FLOOR, np.float32), "amalgam_log_floor")
    proto.graph.initializer.append(floor)
    proto.graph.node.extend(
        [
            helper.make_node("Max", [probabilities, floor.name], ["amalgam_probabilities_floored"]),
            helper.make_node("Log", ["amalgam_probabilities_floored"], [logits]),
        ]
    )
    proto.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", n_classes]))
    return proto


def add_flatten(proto, input_name, image_shape):
    """Make the input ``[batch, *image_shape]`` and reshape it to the features the model takes."""
    from onnx import TensorProto, helper, numpy_helper

    flat_name = input_name + "_flat"
    for node in proto.graph.node:
        node.input[:] = [flat_name if n == input_name else n for n in node.input]
    shape = numpy_helper.from_array(np.array([-1, int(np.prod(image_shape))], np.int64), "amalgam_flat_shape")
    proto.graph.initializer.append(shape)
    proto.graph.node.insert(0, helper.make_node("Reshape", [input_name, shape.name], [flat_name]))
    del proto.graph.input[:]
    proto.graph.input.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *image_shape]))
    return proto


def default_tasks(model):
    """One multi-class task over ``logits`` named ``class``, labelled by the classes."""
    classes = [str(c) for c in model.classes_]
    return [
        {
            "name": "class",
            "output": "logits",
            "index": None,
            "slice": [0, len(classes)],
            "kind": "multiclass",
            "labels": classes,
        }
    ]


def _reference(model, x):
    if is_classifier(model):
        proba = model.predict_proba(x)
        return {"probabilities": proba}, model.predict(x)
    return {"variable": np.asarray(model.predict(x), np.float64).reshape(len(x), -1)}, None


def check_labels(got, labels, proba):
    """Every predicted label agrees, except on near ties of the top two probabilities.

    Returns the fraction of samples whose labels agree.
    """
    ordered = np.sort(proba, axis=1)
    tie = (ordered[:, -1] - ordered[:, -2]) < 1e-5 if proba.shape[1] > 1 else np.zeros(len(proba), bool)
    wrong = (np.asarray(got).astype(str) != np.asarray(labels).astype(str)) & ~tie
    if wrong.any():
        raise ExportError(
            f"sklearn export: ONNX Runtime predicts another label than scikit-learn for "
            f"{int(wrong.sum())} of {len(labels)} samples (rows {np.flatnonzero(wrong)[:5].tolist()})"
        )
    return float(np.mean(np.asarray(got).astype(str) == np.asarray(labels).astype(str)))


def export_sklearn(
    model, path, input_shape=None, opset=18, tasks=None, input_name="x", samples=64, seed=0, trust_pickle=False
):
    """Export a fitted estimator (or a path to one) to ONNX at ``path``; checked and stamped.

    ``tasks=None`` gives a classifier the default task (:func:`default_tasks`).
    Returns a summary dict (path, outputs, max_abs_error, label_agreement).
    """
    if isinstance(model, (str, Path)):
        model = load_sklearn(model, trust_pickle=trust_pickle)
    if not hasattr(model, "predict"):
        raise ExportError(
            f"sklearn export: {type(model).__name__} has no predict(); a teacher is a classifier or regressor"
        )
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise ExportError(f"sklearn export: {type(model).__name__} is not fitted (no n_features_in_)")
    image = tuple(int(d) for d in input_shape) if input_shape else None
    if image and int(np.prod(image)) != n:
        raise ExportError(
            f"sklearn export: input shape {list(image)} holds {int(np.prod(image))} values; the model takes {n} features"
        )

    proto = convert(model, n, input_name, opset)
    classifier = is_classifier(model)
    if classifier:
        add_logits(proto, len(model.classes_))
        tasks = default_tasks(model) if tasks is None else tasks
    if image:
        add_flatten(proto, input_name, image)
    name_batch_axis(proto)
    fresh_shapes(proto)

    x = np.random.default_rng(seed).random((samples, n), dtype=np.float32)
    reference, labels = _reference(model, x.astype(np.float64))
    got = run_onnx(proto, {input_name: x.reshape(samples, *image) if image else x})
    compare_outputs(got, reference, "sklearn")
    agreement = check_labels(got["label"], labels, reference["probabilities"]) if classifier else None
    check_tasks(tasks, got, "sklearn")
    extra = {"input_shape": list(image)} if image else {}
    stamp(
        proto,
        framework="sklearn",
        framework_version=sklearn.__version__,
        tasks=tasks,
        converter=f"skl2onnx {skl2onnx.__version__}",
        estimator=type(model).__name__,
        input_name=input_name,
        output_only=True,
        **extra,
    )
    save_model(proto, path)
    return {
        "path": str(path),
        "outputs": [o.name for o in proto.graph.output],
        "max_abs_error": max_abs_error(got, reference),
        "label_agreement": agreement,
    }
