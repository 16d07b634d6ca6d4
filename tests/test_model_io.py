import hashlib

import numpy as np
import onnx
import pytest

from amalgam.runtime.errors import ModelFileError
from amalgam.runtime.model_io import default_opset, file_sha256, load_model, ort_max_opset, ort_runs_opset
from amalgam.runtime.session import make_session
from tests.builders import PlainCNN, export, linear_model, randomize_bn


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return export(randomize_bn(PlainCNN()), tmp_path_factory.mktemp("io") / "teacher.onnx", opset=17, dynamo=False)


def test_loads_checked_model_and_hashes_file(teacher):
    model = load_model(teacher)
    assert default_opset(model) == 17 and len(model.graph.node) > 5
    assert file_sha256(teacher) == hashlib.sha256(teacher.read_bytes()).hexdigest()


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no_such.onnx: no such model file"):
        load_model(tmp_path / "no_such.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are my notes, not a model\n")
    with pytest.raises(ModelFileError, match="notes.onnx: not an ONNX model"):
        load_model(path)


def test_truncated(tmp_path, teacher):
    path = tmp_path / "cut_short.onnx"
    data = teacher.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match="cut_short.onnx: truncated"):
        load_model(path)


def test_over_size_limit(teacher):
    with pytest.raises(ModelFileError, match="over the size limit of 1000 bytes"):
        load_model(teacher, max_bytes=1000)


def test_opset_newer_than_onnxruntime(tmp_path, teacher):
    model = onnx.load(teacher)
    highest = ort_max_opset(99)
    assert ort_runs_opset(highest) and not ort_runs_opset(highest + 1)
    model.opset_import[0].version = highest + 1
    path = tmp_path / "future.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelFileError, match=f"future.onnx: opset {highest + 1} is newer .* \\(highest: {highest}\\)"):
        load_model(path)


def test_external_data_inside_folder_loads(tmp_path):
    weight = np.random.randn(4, 4).astype(np.float32)
    onnx.save(linear_model(weight), tmp_path / "m.onnx", save_as_external_data=True, location="m.bin", size_threshold=0)
    loaded = load_model(tmp_path / "m.onnx")
    x = np.random.randn(2, 4).astype(np.float32)
    want = x @ weight
    np.testing.assert_allclose(make_session(loaded).run(None, {"x": x})[0], want, rtol=1e-6)


def test_external_data_outside_folder_is_refused(tmp_path):
    model = linear_model(np.random.randn(4, 4).astype(np.float32))
    inner = tmp_path / "models"
    inner.mkdir()
    onnx.save(model, inner / "m.onnx", save_as_external_data=True, location="m.bin", size_threshold=0)
    (inner / "m.bin").rename(tmp_path / "secret.bin")
    unsafe = onnx.load(inner / "m.onnx", load_external_data=False)
    for entry in unsafe.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.bin"
    onnx.save(unsafe, inner / "m.onnx")
    with pytest.raises(ModelFileError, match="initializer 'w' points to external data '../secret.bin' outside"):
        load_model(inner / "m.onnx")


def test_checker_message_names_file(tmp_path):
    model = linear_model(np.eye(4, dtype=np.float32))
    model.graph.node[0].input[1] = "not_there"
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelFileError, match="broken.onnx: the ONNX checker rejects the model: .*not_there"):
        load_model(path)


def test_hash_covers_external_data(tmp_path):
    onnx.save(
        linear_model(np.ones((64, 64), np.float32)),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    before = file_sha256(tmp_path / "m.onnx")
    data = bytearray((tmp_path / "m.onnx.data").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "m.onnx.data").write_bytes(bytes(data))
    assert file_sha256(tmp_path / "m.onnx") != before
