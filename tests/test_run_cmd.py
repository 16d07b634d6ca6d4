"""`amalgam run`: amalgamate, export, validate, and a report.json of the documented schema."""

import json

import pytest
from PIL import Image

from amalgam.toolkit.cli import main
from tests.student_run import CHOSEN, one_thread, student_run  # noqa: F401 (fixture)

NUMBER = (int, float)


def _is(value, types, nullable=False):
    return (nullable and value is None) or (isinstance(value, types) and not isinstance(value, bool))


def check_footprint(f):
    assert set(f) == {"params", "onnx_bytes", "latency_ms"}
    assert _is(f["params"], int) and f["params"] > 0 and _is(f["onnx_bytes"], int) and f["onnx_bytes"] > 0
    assert set(f["latency_ms"]) == {"b1", "b64"}
    assert all(_is(v, NUMBER) and v > 0 for v in f["latency_ms"].values())


def check_schema(report):
    """report.json as docs/report.md documents it: keys and types."""
    assert set(report) == {"tasks", "student", "teachers", "parity", "passed"}
    for task in report["tasks"]:
        assert set(task) == {"name", "teacher", "kind", "student"}
        assert _is(task["name"], str) and task["kind"] in ("binary", "multiclass")
        assert set(task["teacher"]) == {"name", "accuracy", "f1"} and _is(task["teacher"]["name"], str)
        assert set(task["student"]) == {"accuracy", "f1", "agreement"}
        assert _is(task["student"]["agreement"], NUMBER)
        for who in ("teacher", "student"):
            assert all(_is(task[who][k], NUMBER, nullable=True) for k in ("accuracy", "f1"))
    check_footprint(report["student"])
    check_footprint(report["teachers"])
    assert set(report["parity"]) == {"max_abs", "p99_abs", "passed"}
    assert _is(report["parity"]["max_abs"], NUMBER) and _is(report["parity"]["p99_abs"], NUMBER)
    assert isinstance(report["parity"]["passed"], bool) and isinstance(report["passed"], bool)


def test_run_end_to_end_writes_the_four_outputs_and_resumes(student_run, tmp_path, capsys):
    config, _ = student_run
    out = tmp_path / "run"
    args = ["run", str(config), "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as done, one_thread():
        main(args)
    captured = capsys.readouterr()
    assert done.value.code == 0, captured.err
    for name in ("report.json", "report.md", "student.onnx", "plots/report_tasks.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    check_schema(report)
    assert report["passed"] and report["parity"]["passed"]
    assert [t["name"] for t in report["tasks"]] == CHOSEN
    assert all(t["student"]["f1"] is not None for t in report["tasks"])
    assert report["teachers"]["params"] > report["student"]["params"] / 2
    assert Image.open(out / "plots" / "report_tasks.png").size[0] > 100
    md = (out / "report.md").read_text()
    assert md.startswith("# amalgam run: PASS")
    assert "| task |" in captured.out and "latency batch 64" in captured.out
    # every chosen task against its own teacher, and what the run did about it (2 short fine-tune epochs)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "## Each chosen task against its own teacher" in md
    assert all(f"| {task} | " in md.split("## Each chosen task")[1] for task in CHOSEN)
    assert f"worst task: student {metrics['summary']['student']['worst_eval']['task']}" in captured.out
    assert all(f["line"] in md and f["line"] in captured.out for f in metrics["lag"])

    # The run dir holds a run: `run` again is refused (exit 2) unless --resume, which
    # continues from the checkpoints (no training repeated) to the same student.
    weights = (out / "student" / "weights.safetensors").read_bytes()
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2 and "pass --resume to continue it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as resumed, one_thread():
        main(args + ["--resume"])
    assert resumed.value.code == 0, capsys.readouterr().err
    assert (out / "student" / "weights.safetensors").read_bytes() == weights
    assert json.loads((out / "report.json").read_text())["passed"]
