"""Bad teacher ONNX files through ``amalgam inspect``: each is refused with exit 2 and
one message naming the file and what was expected; nothing is executed or written."""

import numpy as np
import onnx
import pytest
from onnx import helper

from amalgam.runtime.model_io import MAX_BYTES_ENV, ort_max_opset
from tests.builders import linear_model
from tests.robustness.contract import assert_bad_input


def test_not_onnx(cli, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("name: teacher\nlayers: 4\n")
    assert_bad_input(cli("inspect", path), str(path), "not an ONNX model")


def test_pickle_named_onnx_is_not_unpickled(cli, tmp_path):
    """A pickle renamed .onnx is parsed as protobuf only: refused, its code never runs."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "teacher.onnx"
    path.write_bytes(pickle.dumps(Payload()))
    assert_bad_input(cli("inspect", path), str(path), "not an ONNX model")
    assert not marker.exists()


def test_truncated_onnx(cli, assets, tmp_path):
    data = (assets / "a.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert_bad_input(cli("inspect", path), str(path), "truncated or corrupt ONNX file")


def test_missing_model_file(cli, tmp_path):
    assert_bad_input(cli("inspect", tmp_path / "absent.onnx"), "absent.onnx: no such model file")


def test_opset_newer_than_the_runtime(cli, assets, tmp_path):
    model = onnx.load(assets / "b.onnx")
    highest = ort_max_opset(99)
    model.opset_import[0].version = highest + 1
    path = tmp_path / "future.onnx"
    onnx.save(model, path)
    assert_bad_input(cli("inspect", path), str(path), f"opset {highest + 1} is newer", f"(highest: {highest})")


def test_external_data_outside_the_model_folder(cli, tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    onnx.save(
        linear_model(np.eye(4, dtype=np.float32)),
        inner / "m.onnx",
        save_as_external_data=True,
        location="m.bin",
        size_threshold=0,
    )
    (inner / "m.bin").rename(tmp_path / "secret.bin")
    model = onnx.load(inner / "m.onnx", load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.bin"
    onnx.save(model, inner / "m.onnx")
    assert_bad_input(cli("inspect", inner / "m.onnx"), "m.onnx", "'../secret.bin' outside the model's folder")


def test_external_data_missing(cli, tmp_path):
    onnx.save(
        linear_model(np.eye(4, dtype=np.float32)),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="m.bin",
        size_threshold=0,
    )
    (tmp_path / "m.bin").unlink()
    assert_bad_input(cli("inspect", tmp_path / "m.onnx"), "external data 'm.bin'", "is missing")


def test_model_over_the_size_limit(cli, assets, monkeypatch):
    size = (assets / "a.onnx").stat().st_size
    monkeypatch.setenv(MAX_BYTES_ENV, str(size - 1))
    assert_bad_input(
        cli("inspect", assets / "a.onnx"), f"{size} bytes is over the size limit of {size - 1}", MAX_BYTES_ENV
    )


def test_external_data_counts_toward_the_size_limit(cli, tmp_path, monkeypatch):
    onnx.save(
        linear_model(np.ones((4, 4), np.float32)),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="m.bin",
        size_threshold=0,
    )
    monkeypatch.setenv(MAX_BYTES_ENV, str((tmp_path / "m.onnx").stat().st_size + 10))
    assert_bad_input(cli("inspect", tmp_path / "m.onnx"), "with its external data (64 bytes)", MAX_BYTES_ENV)


def test_size_limit_setting_must_be_a_number(cli, assets, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "2GB")
    assert_bad_input(cli("inspect", assets / "a.onnx"), f"{MAX_BYTES_ENV}='2GB'", "positive whole number")


def test_graph_the_checker_rejects(cli, tmp_path):
    model = linear_model(np.eye(4, dtype=np.float32))
    model.graph.node[0].input[1] = "not_there"
    onnx.save(model, tmp_path / "broken.onnx")
    assert_bad_input(cli("inspect", tmp_path / "broken.onnx"), "broken.onnx: the ONNX checker rejects", "not_there")


def with_shrink_head(source, path):
    """``source`` with an elementwise Shrink (no torch converter) on its output."""
    model = onnx.load(source)
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["pre_shrink" if o == out else o for o in node.output]
    model.graph.node.append(helper.make_node("Shrink", ["pre_shrink"], [out], lambd=0.0))
    onnx.save(model, path)
    return path


def test_op_no_converter_handles_in_a_branch_check(cli, assets, tmp_path):
    path = with_shrink_head(assets / "b.onnx", tmp_path / "shrink.onnx")
    assert cli("inspect", path).code == 0  # ONNX Runtime runs it; only cutting it for torch fails
    assert_bad_input(cli("inspect", path, "--check"), "ops no converter handles: Shrink")


@pytest.mark.parametrize("spec", ["x1,3", "x:1,a,3"])
def test_malformed_input_shape_option(cli, assets, spec):
    assert_bad_input(cli("inspect", assets / "a.onnx", "--input-shape", spec), f"--input-shape {spec!r}")


def test_graph_that_checks_but_does_not_run(cli, assets, tmp_path):
    """Found by test_fuzz_onnx: one flipped byte made a Conv read (weight, bias) as
    (data, weight); the checker passes it, ONNX Runtime fails when it runs it."""
    model = onnx.load(assets / "b.onnx")
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    conv.input[:2] = conv.input[1:]
    onnx.save(model, tmp_path / "swapped.onnx")
    assert_bad_input(cli("inspect", tmp_path / "swapped.onnx"), "swapped.onnx", "does not run under ONNX Runtime")
