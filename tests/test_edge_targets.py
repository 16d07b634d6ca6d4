"""Edge targets: `amalgam export --target all` writes one artifact per format a device runs,
and `amalgam validate DIR` gates each on its own runtime (ONNX Runtime, OpenVINO, LiteRT)
against the PyTorch student and the teachers.

One export of the shared small run (tests/student_run.py) serves every test: the onnx2tf
conversion runs in .venv-edge (make edge-env), the rest in this environment.
"""

import json
import shutil

import numpy as np
import onnx
import pytest

from amalgam.runtime.model_io import file_sha256
from amalgam.toolkit.cli import main
from tests.student_run import CHOSEN, edge_export, student_run  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # one conversion to every format (~1 min), then gates of it

REQUIRED = {"onnx", "onnx-fp16", "onnx-int8", "ort", "ort-b1", "openvino-fp32", "openvino-fp16", "tflite-fp32"}


def amalgam(capsys, *args):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture
def edge(edge_export, tmp_path):
    """A copy of the folder `amalgam export RUN --target all -o DIR` wrote, and its targets.json."""
    folder = tmp_path / "targets"
    shutil.copytree(edge_export[0], folder)
    return folder, json.loads((folder / "targets.json").read_text())


def by_name(found):
    return {a["name"]: a for a in found["artifacts"]}


def test_every_target_ships_an_artifact_described_in_targets_json(edge):
    folder, found = edge
    artifacts = by_name(found)
    assert set(artifacts) >= REQUIRED, found["skipped"]
    assert "tflite-int8" in artifacts and len(artifacts) >= 9
    for a in artifacts.values():
        assert file_sha256(folder / a["file"]) == a["sha256"]
        assert a["bytes"] == sum((folder / f).stat().st_size for f in a["files"])
        assert a["runtime_version"] and a["outputs"] == CHOSEN
    assert artifacts["onnx"]["input"]["batch"] == "dynamic" and artifacts["ort-b1"]["input"]["shape"][0] == 1
    assert artifacts["tflite-fp32"]["input"]["layout"] == "NHWC"
    for name in ("tflite-fp32", "tflite-int8"):  # measured, not assumed: onnx2tf may name an output after another
        assert list(artifacts[name]["signature_outputs"]) == CHOSEN
    assert {a["precision"] for a in artifacts.values()} == {"fp32", "fp16", "int8"}
    assert artifacts["openvino-fp16"]["bytes"] < 0.6 * artifacts["openvino-fp32"]["bytes"]
    assert artifacts["onnx-int8"]["bytes"] < 0.4 * artifacts["onnx"]["bytes"]


def test_ort_target_has_its_reduced_build_config_and_mobile_report(edge):
    folder, found = edge
    ort = by_name(found)["ort-b1"]
    config = (folder / ort["required_operators"]).read_text()
    assert "ai.onnx;" in config and "Conv" in config
    usability = ort["mobile_usability"]
    assert set(usability["execution_providers"]) >= {"NNAPI", "CoreML MLProgram"}
    assert "NNAPI" in (folder / usability["report"]).read_text()


def test_int8_records_every_variant_tried_and_why_it_ships(edge):
    _, found = edge
    record = by_name(found)["onnx-int8"]["int8"]
    names = [v["name"] for v in record["variants"]]
    assert {"qdq-u8s8-per-channel", "qoperator-u8s8-per-channel", "qdq-u8s8-per-channel-float-ends"} <= set(names)
    assert record["chosen"] in names and record["fp32_b64_ms"] > 0 and record["why"]
    chosen = next(v for v in record["variants"] if v["name"] == record["chosen"])
    within = [v for v in record["variants"] if v["agreement"] is not None and v["agreement"] >= 0.99 and v["parity"]]
    assert chosen["parity"] and chosen["b64_ms"] == min(v["b64_ms"] for v in within)
    ov = by_name(found)
    assert "openvino-int8" in ov or ov["openvino-fp32"]["int8_not_shipped"]["why"]


def test_validate_dir_gates_every_artifact_on_its_runtime(edge, capsys):
    folder, _ = edge
    code, out, err = amalgam(capsys, "validate", folder)
    assert code == 0, err + out
    found = json.loads((folder / "targets.json").read_text())
    for a in found["artifacts"]:
        r = a["results"]
        assert r["passed"] and r["parity"]["passed"], (a["name"], r["failures"])
        assert r["worst_task_margin"] >= -0.01 and r["latency_ms"]["b1"] > 0
        assert (r["latency_ms"]["b64"] is None) == (a["name"] == "ort-b1")
    fp32 = [a["results"]["parity"]["max_abs"] for a in found["artifacts"] if a["precision"] == "fp32"]
    assert max(fp32) < 1e-4
    report = (folder / "report.md").read_text()
    assert report.startswith("# Edge targets: PASS")
    assert "| artifact | runtime | precision | KiB | ms b1 | ms b64 | parity (max abs; int8: SQNR)" in report
    int8 = [a["results"]["parity"] for a in found["artifacts"] if a["precision"] == "int8"]
    assert int8 and all(p["min_sqnr_db"] == 20.0 and p["sqnr_db"] >= 20.0 for p in int8)
    assert all(f"| {a['name']} |" in report for a in found["artifacts"])


def _change_one_weight(path):
    model = onnx.load(str(path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = onnx.numpy_helper.to_array(biggest).copy()
    values.flat[0] += 0.5 * float(np.abs(values).max()) + 1.0
    biggest.CopyFrom(onnx.numpy_helper.from_array(values.astype(values.dtype), biggest.name))
    onnx.save(model, str(path))


def _drop_one_op(path, op_type="Relu"):
    """The first ``op_type`` node removed, its readers fed its input instead."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == op_type)
    for other in model.graph.node:
        other.input[:] = [node.input[0] if i == node.output[0] else i for i in other.input]
    model.graph.node.remove(node)
    onnx.save(model, str(path))


def _swap_two_outputs(path):
    """The first two outputs' names swapped: each task gets the other's logits (onnx2tf's naming slip)."""
    model = onnx.load(str(path))
    a, b = (o.name for o in model.graph.output[:2])
    swap = {a: b, b: a}
    for node in model.graph.node:
        node.output[:] = [swap.get(o, o) for o in node.output]
        node.input[:] = [swap.get(i, i) for i in node.input]
    onnx.save(model, str(path))


def test_a_broken_artifact_fails_the_gate_naming_it(edge, capsys, tmp_path):
    broken, found = edge
    keep = {"onnx", "onnx-fp16", "onnx-int8", "ort"}
    found = {**found, "artifacts": [a for a in found["artifacts"] if a["name"] in keep]}
    (broken / "targets.json").write_text(json.dumps(found))
    _change_one_weight(broken / "student_fp16.onnx")
    _drop_one_op(broken / "student.onnx")
    _swap_two_outputs(broken / "student_int8.onnx")
    code, out, err = amalgam(capsys, "validate", broken)
    assert code == 1, err
    assert "artifact onnx (student.onnx)" in err and "artifact onnx-fp16 (student_fp16.onnx)" in err
    assert "artifact onnx-int8 (student_int8.onnx)" in err and "dB, below 20 dB" in err
    assert "artifact ort " not in err and "3 of 4 artifacts fail" in err
    results = {a["name"]: a["results"] for a in json.loads((broken / "targets.json").read_text())["artifacts"]}
    assert results["ort"]["passed"] and not results["onnx"]["passed"] and not results["onnx-fp16"]["passed"]
    assert not results["onnx-int8"]["passed"] and results["onnx-int8"]["parity"]["sqnr_db"] < 20
    assert "changed since export" in results["onnx"]["notes"][0]


@pytest.mark.parametrize("case", ["unknown", "missing_converter"])
def test_an_unknown_target_or_a_missing_converter_exits_2_before_writing(
    case, student_run, capsys, tmp_path, monkeypatch
):
    out = tmp_path / "edge"
    target = "coreml" if case == "unknown" else "tflite"
    if case == "missing_converter":
        monkeypatch.setenv("AMALGAM_EDGE_PYTHON", str(tmp_path / "no-such-python"))
    code, _, err = amalgam(capsys, "export", student_run[1], "--target", "onnx", "--target", target, "-o", out)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert ("'coreml'" if case == "unknown" else "no-such-python") in err
    assert not out.exists()


def test_run_checks_its_targets_before_training(student_run, capsys, tmp_path):
    config, _ = student_run
    code, _, err = amalgam(capsys, "run", config, "--out", tmp_path / "run", "--target", "coreml")
    assert code == 2 and "--target 'coreml'" in err
    code, _, err = amalgam(capsys, "run", config, "--out", tmp_path / "run", "--set", "export.targets=[tflite, nnapi]")
    assert code == 2 and "export.targets" in err
    assert not (tmp_path / "run").exists()


def test_a_target_whose_converter_fails_gets_one_line_and_the_others_ship(student_run, capsys, tmp_path, monkeypatch):
    """The converter really runs and really fails (an interpreter without onnx2tf stands in for a
    student onnx2tf cannot convert): tflite is listed as not shipped with its reason, onnx ships,
    and the gate judges what shipped."""
    import sys

    monkeypatch.setenv("AMALGAM_EDGE_PYTHON", sys.executable)
    out = tmp_path / "edge"
    code, said, err = amalgam(capsys, "export", student_run[1], "--target", "onnx", "--target", "tflite", "-o", out)
    assert code == 0, err
    found = json.loads((out / "targets.json").read_text())
    assert [a["name"] for a in found["artifacts"]] == ["onnx"]
    (skipped,) = found["skipped"]
    assert skipped["target"] == "tflite" and "onnx2tf cannot convert it" in skipped["reason"]
    assert "No module named 'onnx2tf'" in skipped["reason"]
    assert "not shipped: tflite: " in said
    amalgam(capsys, "validate", out)  # the task gate is the other tests' business: this student is the shared one
    assert "| tflite | - |" in (out / "report.md").read_text()
    (onnx_entry,) = json.loads((out / "targets.json").read_text())["artifacts"]
    assert onnx_entry["results"]["parity"]["passed"]
