"""Keras exporter, in .venv-keras (TensorFlow, tf2onnx, no torch)."""

import importlib.util

import keras
import numpy as np
import onnx
import pytest
import tf2onnx

from amalgam.exporters.keras_export import export_keras
from amalgam.exporters.metadata import read_metadata
from amalgam.runtime.errors import ExportError, ModelFileError
from amalgam.runtime.session import make_session
from tests.frameworks.cli import amalgam
from tests.frameworks.keras_env.models import small_cnn

TASKS = [{"name": "cat", "output": "logits", "index": 0, "slice": None, "kind": "binary", "labels": None}]


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "cnn.keras"
    small_cnn(channels=(4, 8)).save(path)
    return path


def _ort(path, x):
    sess = make_session(path, opt_level="basic")
    return sess.run(["logits"], {"x": x})[0]


def test_environment_has_no_torch():
    assert importlib.util.find_spec("torch") is None


def test_tf2onnx_from_keras_fails_on_keras3_and_the_exporter_does_not(keras_file, tmp_path):
    """The Keras 3 pitfall is real with these pins, and export_keras goes around it."""
    model = keras.models.load_model(keras_file)
    with pytest.raises(Exception):  # noqa: B017 (tf2onnx raises several kinds here, by version)
        tf2onnx.convert.from_keras(model, opset=18)
    summary = export_keras(model, tmp_path / "t.onnx")
    assert summary["max_abs_error"] < 1e-4


@pytest.mark.parametrize("nchw", [True, False])
def test_ort_matches_keras(keras_file, tmp_path, nchw):
    out = tmp_path / "t.onnx"
    summary = export_keras(keras_file, out, nchw=nchw, tasks=TASKS)
    x = np.random.default_rng(3).random((5, 28, 28, 1), dtype=np.float32)
    ref = keras.models.load_model(keras_file)(x).numpy()
    got = _ort(out, np.transpose(x, (0, 3, 1, 2)) if nchw else x)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    meta = read_metadata(out)
    assert meta["framework"] == "keras" and meta["framework_version"] == keras.__version__
    assert meta["tasks"] == TASKS and meta["layout"] == summary["layout"] == ("NCHW" if nchw else "NHWC")
    dims = [d.dim_param or d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 1, 28, 28] if nchw else ["batch", 28, 28, 1])


def test_legacy_hdf5_file(tmp_path):
    h5 = tmp_path / "cnn.h5"
    small_cnn(seed=2, channels=(4,)).save(h5)
    export_keras(h5, tmp_path / "t.onnx", nchw=True)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    ref = keras.models.load_model(h5)(np.transpose(x, (0, 2, 3, 1))).numpy()
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", x), ref, atol=1e-4, rtol=1e-3)


def test_task_outside_the_output_is_refused_and_nothing_written(keras_file, tmp_path):
    bad = [dict(TASKS[0], index=5)]
    with pytest.raises(ExportError, match="position 5 of output 'logits', which has 5"):
        export_keras(keras_file, tmp_path / "t.onnx", tasks=bad)
    assert list(tmp_path.iterdir()) == []


def test_nchw_needs_an_image_input(tmp_path):
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    with pytest.raises(ExportError, match="--nchw needs an NHWC image input"):
        export_keras(dense, tmp_path / "t.onnx", nchw=True)


def test_not_a_keras_file(tmp_path):
    wrong = tmp_path / "model.skops"
    wrong.write_bytes(b"not keras")
    with pytest.raises(ModelFileError, match="expected a Keras model file"):
        export_keras(wrong, tmp_path / "t.onnx")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="Keras cannot load it"):
        export_keras(broken, tmp_path / "t.onnx")


def test_cli(keras_file, tmp_path, capsys):
    out = tmp_path / "t.onnx"
    code, io = amalgam(capsys, "export-teacher", "keras", keras_file, "--nchw", "--tasks", "logits:a,b,,c", "-o", out)
    assert code == 0 and "wrote" in io.out
    assert [(t["name"], t["index"]) for t in read_metadata(out)["tasks"]] == [("a", 0), ("b", 1), ("c", 3)]
    code, io = amalgam(capsys, "export-teacher", "keras", tmp_path / "missing.keras", "-o", tmp_path / "u.onnx")
    assert code == 2 and "missing.keras: no such file" in io.err and not (tmp_path / "u.onnx").exists()


def test_an_input_shape_the_model_does_not_take(tmp_path):
    """The traced error's last line (the reason), not TF's 'in user code:' header."""
    flat = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(
        ExportError,
        match=r"^keras export: the model does not run on an input of shape "
        r"\[None, 20, 20, 1\]: ValueError: .*(64|400)",
    ):
        export_keras(flat, tmp_path / "t.onnx", input_shape=(1, 20, 20, 1))
    assert list(tmp_path.iterdir()) == []
