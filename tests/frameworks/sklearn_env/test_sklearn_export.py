"""scikit-learn exporter, in .venv-sklearn (scikit-learn, skl2onnx, skops, no torch)."""

import importlib.util

import joblib
import numpy as np
import onnx
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from amalgam.exporters.metadata import read_metadata
from amalgam.exporters.sklearn_export import export_sklearn, load_sklearn
from amalgam.runtime.errors import ExportError, ModelFileError
from amalgam.runtime.session import make_session
from tests.frameworks.cli import amalgam
from tests.frameworks.sklearn_env.models import images, small_forest


class MajorityVote(ClassifierMixin, BaseEstimator):
    """A class from outside scikit-learn: skops must not load it silently."""

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x):
        return np.full(len(x), self.classes_[0])


@pytest.fixture(scope="module")
def forest_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sk") / "forest.skops"
    sio.dump(small_forest(), path)
    return path


def _run(path, x):
    sess = make_session(path, opt_level="basic")
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"x": x})))


def test_environment_has_no_torch():
    assert importlib.util.find_spec("torch") is None


def test_forest_probabilities_labels_and_logits(forest_file, tmp_path):
    out = tmp_path / "f.onnx"
    summary = export_sklearn(forest_file, out, input_shape=(1, 28, 28))
    model = load_sklearn(forest_file)
    x, _ = images(n=50, seed=7)
    got = _run(out, x.astype(np.float32).reshape(50, 1, 28, 28))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x.astype(np.float32)), atol=1e-5)
    assert got["probabilities"].ndim == 2, "ZipMap must be off"
    agree = np.mean(got["label"] == model.predict(x.astype(np.float32)))
    assert agree >= 0.96 and summary["label_agreement"] >= 0.9
    soft = np.exp(got["logits"]) / np.exp(got["logits"]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft, got["probabilities"] / got["probabilities"].sum(axis=1, keepdims=True), atol=1e-5)
    meta = read_metadata(out)
    assert meta["framework"] == "sklearn" and meta["output_only"] is True
    assert meta["tasks"] == [
        {
            "name": "class",
            "output": "logits",
            "index": None,
            "slice": [0, 3],
            "kind": "multiclass",
            "labels": ["0", "1", "2"],
        }
    ]


def test_input_is_float32_even_for_a_float64_fit(tmp_path):
    """The double-input pitfall: a float64 fit must still give a float32 ONNX input."""
    x, y = images(n=120)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    out = tmp_path / "lr.onnx"
    export_sklearn(model, out)
    (inp,) = onnx.load(out).graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    got = _run(out, x[:20].astype(np.float32))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x[:20].astype(np.float32)), atol=1e-4)


def test_pickles_only_when_trusted(tmp_path, capsys):
    model = small_forest()
    joblib.dump(model, tmp_path / "m.joblib")
    with pytest.raises(ModelFileError, match="--trust-pickle"):
        load_sklearn(tmp_path / "m.joblib")
    code, io = amalgam(capsys, "export-teacher", "sklearn", tmp_path / "m.joblib", "-o", tmp_path / "a.onnx")
    assert code == 2 and "runs arbitrary code" in io.err and not (tmp_path / "a.onnx").exists()
    code, io = amalgam(
        capsys, "export-teacher", "sklearn", tmp_path / "m.joblib", "--trust-pickle", "-o", tmp_path / "a.onnx"
    )
    assert code == 0 and "warning:" in io.err and (tmp_path / "a.onnx").is_file()


def test_skops_with_foreign_types_is_refused(tmp_path):
    sio.dump(MajorityVote().fit(np.zeros((4, 2)), [0, 1, 0, 1]), tmp_path / "m.skops")
    with pytest.raises(ModelFileError, match="outside scikit-learn and numpy"):
        load_sklearn(tmp_path / "m.skops")


def test_bad_inputs(forest_file, tmp_path, capsys):
    with pytest.raises(ExportError, match="holds 100 values; the model takes 784"):
        export_sklearn(forest_file, tmp_path / "f.onnx", input_shape=(1, 10, 10))
    with pytest.raises(ExportError, match="not fitted"):
        export_sklearn(LogisticRegression(), tmp_path / "f.onnx")
    (tmp_path / "model.keras").write_bytes(b"zip")
    code, io = amalgam(capsys, "export-teacher", "sklearn", tmp_path / "model.keras", "-o", tmp_path / "f.onnx")
    assert code == 2 and "expected a scikit-learn model as .skops" in io.err
    code, io = amalgam(
        capsys, "export-teacher", "sklearn", forest_file, "--tasks", "logits:a,b,c,d", "-o", tmp_path / "f.onnx"
    )
    assert code == 2 and "task 'd' reads position 3 of output 'logits', which has 3" in io.err
    assert not (tmp_path / "f.onnx").exists()
