"""The Python API (amalgam.inspect / amalgamate / export / validate / run) on the small
real run of tests/student_run.py: typed results, and the CLI's typed errors."""

import shutil

import pytest

import amalgam
from tests.student_run import CHOSEN, one_thread, student_run  # noqa: F401 (fixture)


def test_inspect_export_validate(student_run, tmp_path):
    config, run_dir = student_run
    found = amalgam.inspect(config.parent / "a.onnx")
    assert found.inputs[0]["shape"][1:] == [1, 16, 16] and len(found.blocks) >= 3 and not found.failed
    exported = amalgam.export(run_dir, tmp_path / "student.onnx")
    assert exported.student.is_file() and exported.raw.is_file()
    checked = amalgam.validate(exported.student, run=run_dir, report=tmp_path / "report.json")
    assert checked.passed and [t["name"] for t in checked.tasks] == CHOSEN
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()


def test_amalgamate_and_run_resume_a_run_dir(student_run, tmp_path):
    """A copied finished run dir: amalgamate and run continue it (no training repeated)."""
    config, run_dir = student_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    with one_thread():
        done = amalgam.amalgamate(config, out=out, resume=True, cache_dir=run_dir.parent / "cache")
        assert done.run_dir == out and done.metrics["summary"]["student"]["f1"] > 0.5
        shipped = amalgam.run(str(config), out=out, resume=True, cache_dir=run_dir.parent / "cache")
    assert shipped.passed and shipped.report_path == out / "report.json"
    assert [t["name"] for t in shipped.report["tasks"]] == CHOSEN


def test_typed_errors_carry_the_cli_exit_codes(student_run, tmp_path):
    config, run_dir = student_run
    with pytest.raises(amalgam.errors.BadInputError) as missing:
        amalgam.export(tmp_path / "nothing", tmp_path / "s.onnx")
    assert missing.value.exit_code == 2 and "not a run dir" in str(missing.value)
    with pytest.raises(amalgam.errors.ConfigError) as bad:
        amalgam.amalgamate(config, out=tmp_path / "r", overrides=["training.lr=-1"])
    assert bad.value.exit_code == 2 and "training.lr" in str(bad.value)
    with pytest.raises(amalgam.errors.BadInputError, match="run dir exists"):
        amalgam.amalgamate(config, out=run_dir)
