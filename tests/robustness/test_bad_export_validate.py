"""Bad input to ``amalgam export`` and ``amalgam validate``: int8 without calibration
data, a student validated against teachers it was not built from, a run dir or a
student file that is not one. Exit 2, the file named, nothing half-written."""

import shutil

import pytest

from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import (
    assert_bad_input,
    assert_no_partial_files,
    base_config,
    partial_files,
    write_config,
)
from tests.synthetic import SIZE


@pytest.fixture(scope="module")
def student(assets, tmp_path_factory):
    """A run dir (no training epochs: enough for the checks) and its exported student."""
    root = tmp_path_factory.mktemp("student")
    config = write_config(root, base_config(assets))
    for args in (
        ["amalgamate", config, "--out", root / "run", "--quiet", "--cache-dir", root / "cache"],
        ["export", root / "run", "-o", root / "student.onnx"],
    ):
        with pytest.raises(SystemExit) as e:
            from amalgam.toolkit.cli import main

            main([str(a) for a in args])
        assert e.value.code == 0, args
    return root


def test_int8_without_calibration_data(cli, student, tmp_path):
    out = tmp_path / "student_int8.onnx"
    result = cli("export", student / "run", "-o", out, "--quantize", "int8")
    assert_bad_input(result, "--quantize int8 needs calibration data", "--calib-data")
    assert list(tmp_path.iterdir()) == []


def test_export_from_a_folder_that_is_no_run(cli, tmp_path):
    (tmp_path / "run").mkdir()
    result = cli("export", tmp_path / "run", "-o", tmp_path / "student.onnx")
    assert_bad_input(result, f"{tmp_path / 'run'}: not a run dir (no student/spec.json)")
    assert not (tmp_path / "student.onnx").exists()
    assert_no_partial_files(tmp_path)


def test_validate_against_teachers_it_was_not_built_from(cli, assets, student, tmp_path):
    other = export(
        randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5), seed=9),
        tmp_path / "b.onnx",
        opset=17,
        dynamo=False,
        input_shape=(2, 1, SIZE, SIZE),
    )
    config = base_config(assets)
    config["teachers"][1]["onnx"] = str(other)
    path = write_config(tmp_path, config)
    report = tmp_path / "report.json"
    result = cli(
        "validate",
        student / "student.onnx",
        "--run",
        student / "run",
        "--config",
        path,
        "--report",
        report,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert_bad_input(result, "validating a student against teachers it was not built from", "teacher 'B'", str(other))
    assert not report.exists()


def test_validate_a_file_that_is_no_student(cli, assets, student, tmp_path):
    shutil.copy(assets / "b.onnx", tmp_path / "teacher.onnx")  # one file, no external data
    result = cli("validate", tmp_path / "teacher.onnx", "--run", student / "run")
    assert_bad_input(result, "teacher.onnx: not a student exported by `amalgam export`")


def test_validate_a_truncated_student(cli, student, tmp_path):
    data = (student / "student.onnx").read_bytes()
    (tmp_path / "student.onnx").write_bytes(data[: len(data) // 3])
    result = cli("validate", tmp_path / "student.onnx", "--run", student / "run")
    assert_bad_input(result, "student.onnx", "truncated or corrupt ONNX file")


def test_export_to_an_unwritable_folder(cli, student, tmp_path):
    out = tmp_path / "plain" / "student.onnx"
    (tmp_path / "plain").write_text("a file, not a folder")
    result = cli("export", student / "run", "-o", out)
    assert_bad_input(result, "student.raw.onnx: cannot write the ONNX file (")
    assert_no_partial_files(tmp_path)


def test_export_with_corrupt_student_weights(cli, student, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(student / "run" / "student", run / "student")
    (run / "student" / "weights.safetensors").write_bytes(b"junk")
    result = cli("export", run, "-o", tmp_path / "student.onnx")
    assert_bad_input(result, "weights.safetensors: not the weights of this student")
    assert not (tmp_path / "student.onnx").exists()


def test_calibration_data_that_is_not_an_npz(cli, student, tmp_path):
    (tmp_path / "calib.npz").write_bytes(b"garbage")
    out = tmp_path / "student_int8.onnx"
    result = cli("export", student / "run", "-o", out, "--quantize", "int8", "--calib-data", tmp_path / "calib.npz")
    assert_bad_input(result, "calib.npz: cannot read as .npz", "never done")
    assert "allow_pickle" not in result.err
    assert not out.exists() and not partial_files(tmp_path)


def test_report_path_not_writable(tmp_path):
    from amalgam.runtime.errors import BadInputError
    from amalgam.runtime.files import write_text_atomic

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match="r.json: cannot write the file"):
        write_text_atomic(blocker / "r.json", "{}")
    assert not list(tmp_path.glob(".*.tmp"))
