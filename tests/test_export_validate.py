"""`amalgam export` and `amalgam validate` on a student trained on small real data."""

import json
import shutil

import numpy as np
import onnx
import pytest

from amalgam.exporters.metadata import read_metadata
from amalgam.runtime.model_io import file_sha256
from amalgam.runtime.session import make_session
from amalgam.toolkit.cli import main
from tests.student_run import CHOSEN, student_run  # noqa: F401 (fixture)


def amalgam(capsys, *args):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture(scope="module")
def exported(student_run, tmp_path_factory):
    """student.onnx (simplified, dynamic batch) and student.raw.onnx of the shared run."""
    from amalgam.toolkit.ship.export import export_student

    return export_student(student_run[1], tmp_path_factory.mktemp("export") / "student.onnx")


def test_export_writes_simplified_and_raw_files_with_a_dynamic_batch(exported):
    assert exported.student.is_file() and exported.raw.name == "student.raw.onnx" and exported.raw.is_file()
    session = make_session(exported.student, opt_level="basic")
    assert [o.name for o in session.get_outputs()] == CHOSEN
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).random((batch, 1, 16, 16), dtype=np.float32)
        outputs = session.run(None, {"input": x})
        assert [o.shape for o in outputs] == [(batch,)] * len(CHOSEN)


def test_metadata_reads_back(exported, student_run):
    meta = read_metadata(exported.student)
    assert meta["role"] == "student" and meta["precision"] == "fp32"
    assert [t["name"] for t in meta["tasks"]] == CHOSEN
    assert all(t["output"] == t["name"] and t["kind"] == "binary" for t in meta["tasks"])
    spec = json.loads((student_run[1] / "student" / "spec.json").read_text())
    assert set(meta["thresholds"]) == set(CHOSEN)  # set on the held-out split (evaluation.threshold)
    assert meta["thresholds"] == spec["thresholds"] and meta["teacher_thresholds"] == spec["teacher_thresholds"]
    assert meta["preprocess"]["size"] == [16, 16] and meta["preprocess"]["channels"] == 1
    root = student_run[0].parent
    assert meta["teachers"] == {"A": file_sha256(root / "a.onnx"), "B": file_sha256(root / "b.onnx")}
    assert meta["task_teachers"] == {"c0": "A", "c2": "A", "c6": "B"}
    assert meta["simplified"]["tool"] == "onnxsim" and meta["toolkit_version"]
    assert "simplified" not in read_metadata(exported.raw)


def test_validate_passes_a_good_student(exported, student_run, capsys, tmp_path):
    report = tmp_path / "gate" / "report.json"
    code, out, err = amalgam(capsys, "validate", exported.student, "--run", student_run[1], "--report", report)
    assert code == 0, err
    found = json.loads(report.read_text())
    assert found["passed"] and found["parity"]["passed"] and found["failures"] == []
    assert [r["title"] for r in found["numeric"]] == ["ONNX student vs PyTorch student", "simplified vs unsimplified"]
    assert found["parity"]["max_abs"] < 1e-4
    assert [t["name"] for t in found["tasks"]] == CHOSEN
    for task in found["tasks"]:
        assert task["student"]["f1"] >= task["teacher"]["f1"] - 0.01
        assert task["student"]["agreement"] > 0.9
    assert found["agreement_torch"] == {name: 1.0 for name in CHOSEN}
    assert report.with_suffix(".md").read_text().startswith("# Student validation: PASS")
    assert "PASS" in out


def _shift_output(model, output, delta):
    """``model`` with ``delta`` added to graph output ``output`` alone (the export-time
    folds may share a head's Gemm between outputs, so no single weight is one output's)."""
    raw = f"{output}_before_shift"
    for node in model.graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
        node.input[:] = [raw if i == output else i for i in node.input]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(delta), f"{output}_shift"))
    model.graph.node.append(onnx.helper.make_node("Add", [raw, f"{output}_shift"], [output]))
    return model


def test_a_perturbed_output_fails_the_gate_naming_the_output(exported, student_run, capsys, tmp_path):
    bad = tmp_path / "student.onnx"
    onnx.save(_shift_output(onnx.load(str(exported.student)), "c6", 0.05), str(bad))
    code, _, err = amalgam(capsys, "validate", bad, "--run", student_run[1])
    assert code == 1
    assert "'c6'" in err and "'c0'" not in err
    found = json.loads((tmp_path / "student.validation.json").read_text())
    assert not found["passed"] and not found["parity"]["passed"]
    outputs = found["numeric"][0]["outputs"]
    assert [name for name, o in outputs.items() if not o["passed"]] == ["c6"]


def test_a_wider_tolerance_for_the_output_lets_it_pass(exported, student_run, capsys, tmp_path):
    code, _, err = amalgam(
        capsys,
        "validate",
        exported.student,
        "--run",
        student_run[1],
        "--atol",
        "0",
        "--rtol",
        "0",
        "--srtol",
        "0",
        "--report",
        tmp_path / "r.json",
    )
    assert code == 1 and "max abs error" in err
    loose = [arg for name in CHOSEN for arg in ("--tolerance", f"{name}:1e-3")]
    code, _, err = amalgam(
        capsys,
        "validate",
        exported.student,
        "--run",
        student_run[1],
        "--atol",
        "0",
        "--rtol",
        "0",
        "--srtol",
        "0",
        *loose,
        "--report",
        tmp_path / "r.json",
    )
    assert code == 0, err


def _other_run(run, tmp_path):
    """A copy of the run dir whose student has its tasks in another order."""
    other = tmp_path / "other"
    shutil.copytree(run / "student", other / "student")
    shutil.copy(run / "config.json", other / "config.json")
    spec = json.loads((other / "student" / "spec.json").read_text())
    spec["task_order"] = spec["task_order"][::-1]
    (other / "student" / "spec.json").write_text(json.dumps(spec))
    return other


def _swapped_teachers(config, tmp_path):
    """The run's config with teacher A pointing at a copy of teacher B's file."""
    data = json.loads((config.parent / "run" / "config.json").read_text())
    data["teachers"][0]["onnx"] = data["teachers"][1]["onnx"]
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "case", ["missing", "not_onnx", "not_a_run", "other_run", "teachers", "no_teachers", "unknown_tolerance"]
)
def test_bad_input_exits_2(case, exported, student_run, capsys, tmp_path):
    config, run = student_run
    student, args = exported.student, []
    expected = {
        "missing": "no such model file",
        "not_onnx": "not an ONNX model",
        "not_a_run": "not a run dir",
        "other_run": "was not exported from run dir",
        "no_teachers": "give --run RUN_DIR or --config",
        "teachers": "teachers it was not built from",
        "unknown_tolerance": "--tolerance given for ['nope']",
    }
    if case == "missing":
        student = tmp_path / "absent.onnx"
    elif case == "not_onnx":
        student = tmp_path / "notes.onnx"
        student.write_text("this is not a model\n" * 20)
    elif case == "not_a_run":
        args = ["--run", tmp_path]
    elif case == "other_run":
        args = ["--run", _other_run(run, tmp_path)]
    elif case == "teachers":
        args = ["--config", _swapped_teachers(config, tmp_path)]
    elif case == "unknown_tolerance":
        args = ["--run", run, "--tolerance", "nope:1e-3"]
    code, _, err = amalgam(capsys, "validate", student, *args, "--report", tmp_path / "r.json")
    assert code == 2, err
    assert err.startswith("error: ") and expected[case].lower() in err.lower(), err
    assert "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_int8_without_calibration_data_exits_2(student_run, capsys, tmp_path):
    code, _, err = amalgam(capsys, "export", student_run[1], "-o", tmp_path / "s.onnx", "--quantize", "int8")
    assert code == 2 and "--calib-data" in err
    assert list(tmp_path.iterdir()) == []


def test_int8_student_is_3x_smaller_and_passes_the_task_gate(student_run, capsys, tmp_path):
    config, run = student_run
    out = tmp_path / "student_int8.onnx"
    code, said, err = amalgam(
        capsys, "export", run, "-o", out, "--quantize", "int8", "--calib-data", config.parent / "train.npz"
    )
    assert code == 0, err
    speed = read_metadata(out)["int8_speed"]  # measured here: the line is printed exactly when int8 is slower
    assert speed["slower"] == (speed["int8_b64_ms"] > speed["fp32_b64_ms"])
    assert ("note: int8 is slower than fp32" in said) == speed["slower"]
    fp32 = tmp_path / "student_int8.fp32.onnx"
    assert read_metadata(out)["precision"] == "int8" and read_metadata(fp32)["precision"] == "fp32"
    assert fp32.stat().st_size / out.stat().st_size >= 3
    code, _, err = amalgam(capsys, "validate", out, "--run", run)
    assert code == 0, err
    found = json.loads((tmp_path / "student_int8.validation.json").read_text())
    assert found["precision"] == "int8" and found["numeric"] == [] and found["passed"]
    assert any("slower than fp32" in n for n in found["notes"]) == speed["slower"]
    assert all(t["student"]["f1"] >= t["teacher"]["f1"] - 0.01 for t in found["tasks"])
    assert min(found["agreement_torch"].values()) > 0.97
    unlabeled = json.loads((run / "config.json").read_text())
    unlabeled["data"]["labels"] = {}
    (tmp_path / "unlabeled.json").write_text(json.dumps(unlabeled))
    code, _, err = amalgam(
        capsys,
        "validate",
        out,
        "--run",
        run,
        "--config",
        tmp_path / "unlabeled.json",
        "--report",
        tmp_path / "unlabeled_report.json",
    )
    assert code == 0, err  # judged on agreement with the teachers, against the PyTorch student's
    found = json.loads((tmp_path / "unlabeled_report.json").read_text())
    assert all(t["student"]["f1"] is None and t["teacher"]["accuracy"] is None for t in found["tasks"])
    assert all(t["student"]["agreement"] > 0.97 for t in found["tasks"])


def test_static_batch_student_validates(student_run, capsys, tmp_path):
    out = tmp_path / "student_b4.onnx"
    code, stdout, err = amalgam(capsys, "export", student_run[1], "-o", out, "--static-batch", "16")
    assert code == 0, err
    assert "Checking" not in stdout + err  # onnxsim's chatter stays out of the command's output
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [16, 1, 16, 16]
    assert read_metadata(out)["export"]["static_batch"] == 16
    code, _, err = amalgam(capsys, "validate", out, "--run", student_run[1])
    assert code == 0, err  # 600 eval images = 37 batches of 16 and a padded one
