"""Layers that hold constants (Rescaling, Normalization, lookup tables), a keras.applications
EfficientNetB0, and a quiet terminal: the Keras exporter in .venv-keras."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest

from amalgam.exporters import check
from amalgam.exporters.keras_export import export_keras
from amalgam.runtime.errors import ExportError
from amalgam.runtime.session import make_session
from tests.frameworks.cli import amalgam
from tests.frameworks.keras_env.models import small_cnn
from tests.frameworks.keras_env.zoo import INPUT_SHAPE, build, calibrate

ROOT = Path(__file__).resolve().parents[3]
NOISY_TF = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}


def preprocessing_cnn():
    """Pixels in 0..255 -> Rescaling, Normalization with given and with adapted statistics,
    a per-channel Rescaling (EfficientNet's stem with ImageNet weights) -> a small CNN."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.050, 0.051])(x)
    x = keras.layers.Normalization(name="adapted")(x)
    x = keras.layers.Rescaling([2.2, 1.8, 1.5], offset=0.1)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    return calibrate(model, _pixels(0, 64))


def _pixels(seed, n, shape=(16, 16, 3)):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def _ort(path, x):
    sess = make_session(path, opt_level="basic")
    return sess.run(["logits"], {"x": x})[0]


def _nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def test_rescaling_and_normalization_constants_fold(tmp_path):
    model = preprocessing_cnn()
    adapted = model.get_layer("adapted")
    assert np.abs(np.asarray(adapted.mean)).max() > 0.1  # not the identity it starts as
    export_keras(model, tmp_path / "t.onnx", nchw=True)
    assert [i.name for i in onnx.load(tmp_path / "t.onnx").graph.input] == ["x"]
    x = _pixels(5, 6)
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", _nchw(x)), model(x).numpy(), atol=1e-4, rtol=1e-3)


def test_efficientnet_b0(tmp_path):
    """keras.applications.EfficientNetB0: its Normalization folds, ONNX Runtime matches Keras."""
    model = build("efficientnetb0")
    summary = export_keras(model, tmp_path / "t.onnx", nchw=True)
    graph = onnx.load(tmp_path / "t.onnx").graph
    assert [i.name for i in graph.input] == ["x"] and summary["max_abs_error"] > 0
    x = np.random.default_rng(7).standard_normal((3, *INPUT_SHAPE), dtype=np.float32)
    ref = model(x).numpy()
    assert np.abs(ref).max() > 1  # logits, not a dead network
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", _nchw(x)), ref, atol=1e-4, rtol=1e-3)


def lookup_model():
    """A lookup table (IntegerLookup) is TensorFlow state that is neither a weight nor a tensor."""
    inputs = keras.Input((4,))
    x = keras.layers.IntegerLookup(vocabulary=[1, 2, 3], name="lookup")(keras.ops.cast(inputs, "int64"))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.ops.cast(x, "float32")))


def test_grouped_convolutions_convert(tmp_path):
    """ConvNeXt's parts: Conv2D with groups (a depthwise one, and 4 groups), which Keras runs under
    XLA and tf2onnx left as a StatefulPartitionedCall ONNX Runtime cannot load, now plain grouped
    Convs; and exact GELU, whose Erfc (no ONNX op) is now 1 - Erf."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(16, 7, padding="same", groups=16, name="depthwise")(x)
    x = keras.layers.Activation("gelu")(x)  # exact GELU: TensorFlow's erfc, which ONNX lacks
    x = keras.layers.Conv2D(32, 3, strides=2, groups=4, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))
    export_keras(model, tmp_path / "t.onnx", nchw=True)
    graph = onnx.load(tmp_path / "t.onnx").graph
    assert not [n.op_type for n in graph.node if "PartitionedCall" in n.op_type or n.op_type == "Erfc"]
    assert "Erf" in {n.op_type for n in graph.node}
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert sorted(g for g in groups if g > 1) == [4, 16]
    x = _pixels(6, 4)
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", _nchw(x)), model(x).numpy(), atol=1e-4, rtol=1e-3)


def test_an_op_tf2onnx_leaves_unconverted_is_refused_naming_the_node(tmp_path):
    """A layer of the user's own that calls an XLA-compiled tf.function: one line, nothing written."""
    import tensorflow as tf

    doubled = tf.function(lambda t: 2.0 * t, jit_compile=True)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: doubled(t), name="mine")(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(
        ExportError, match=r"tf2onnx left TensorFlow op '\w*PartitionedCall' unconverted at node '.*mine"
    ):
        export_keras(model, tmp_path / "t.onnx", nchw=True)
    assert not list(tmp_path.iterdir())


def test_a_lookup_table_is_refused_naming_its_layer(tmp_path):
    with pytest.raises(ExportError, match=r"layer 'lookup' holds .*table_handle.* cannot be folded"):
        export_keras(lookup_model(), tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []


def test_tolerance_miss_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    path = tmp_path / "cnn.keras"
    small_cnn(channels=(4, 8)).save(path)
    monkeypatch.setitem(check.TOLERANCES, "keras", (0.0, 0.0, 0.0))
    code, io = amalgam(capsys, "export-teacher", "keras", path, "-o", tmp_path / "t.onnx")
    assert code == 1 and not (tmp_path / "t.onnx").exists()
    assert io.err.startswith(
        "error: keras export: ONNX Runtime vs keras: 1 of 1 outputs differ; 'logits': max abs error"
    )
    assert io.err.count("\n") == 1


def _cli(*args, env=None):
    """``amalgam`` in its own process, TensorFlow asked to be as noisy as it gets."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **NOISY_TF, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "amalgam", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_terminal_shows_our_lines_only(tmp_path):
    """TF banners (oneDNN on, C++ log level 0) go to the --log file; stdout has one line,
    stderr none; a refusal is one error line."""
    path = tmp_path / "cnn.keras"
    small_cnn(channels=(4,)).save(path)
    out, log = tmp_path / "t.onnx", tmp_path / "export.log"
    done = _cli("export-teacher", "keras", path, "--nchw", "-o", out, "--log", log)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines() == [done.stdout.strip()] and done.stdout.startswith(f"wrote {out}")
    assert "oneDNN custom operations are on" in log.read_text()

    lookup = tmp_path / "lookup.keras"
    lookup_model().save(lookup)
    refused = _cli("export-teacher", "keras", lookup, "-o", tmp_path / "u.onnx")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: keras export: layer 'lookup' holds")
    assert not (tmp_path / "u.onnx").exists()
