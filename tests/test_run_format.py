"""The run dir's format version (toolkit/student/rundir.py) on a real saved run: written
into run.json and the student's spec.json, and every reader (--resume, export, validate,
the API) refuses another format with one ``error:`` line and exit 2, before torch."""

import json
import shutil

import pytest

import amalgam
from amalgam.toolkit.student.rundir import FORMAT
from tests.robustness.contract import assert_bad_input, run_cli
from tests.student_run import student_run  # noqa: F401 (fixture)


def _copy(run, tmp_path, record=None, spec=None):
    """A copy of ``run`` with run.json / student/spec.json fields replaced (None: key removed)."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("cache"))
    for path, fields in ((copy / "run.json", record), (copy / "student" / "spec.json", spec)):
        data = json.loads(path.read_text())
        for key, value in (fields or {}).items():
            data.pop(key) if value is None else data.update({key: value})
        path.write_text(json.dumps(data))
    return copy


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_a_run_records_its_format_in_run_json_and_the_students_spec(student_run):
    run = student_run[1]
    assert json.loads((run / "run.json").read_text())["format"] == FORMAT
    assert json.loads((run / "student" / "spec.json").read_text())["format"] == FORMAT


def test_export_refuses_a_run_dir_of_amalgam_0_1_0(student_run, capsys, tmp_path):
    """0.1.0 wrote no format into run.json: it reads as format 1, written by 0.1.0."""
    run = _copy(student_run[1], tmp_path, record={"format": None, "toolkit_version": "0.1.0"})
    result = run_cli(capsys, "export", run, "-o", tmp_path / "student.onnx")
    assert_bad_input(
        result,
        f"{run / 'run.json'}: run dir format 1 (written by amalgam 0.1.0)",
        f"this amalgam reads format {FORMAT}",
        "re-run `amalgam amalgamate`",
        "or read it with amalgam 0.1.0",
    )
    assert result.err.count("\n") == 1, result.err
    assert not list(tmp_path.glob("student*.onnx"))


def test_validate_refuses_a_student_of_a_newer_format(student_run, capsys, tmp_path):
    from amalgam.toolkit.ship.export import export_student

    student = export_student(student_run[1], tmp_path / "student.onnx").student
    run = _copy(student_run[1], tmp_path, spec={"format": FORMAT + 1, "toolkit_version": "9.0.0"})
    result = run_cli(capsys, "validate", student, "--run", run, "--report", tmp_path / "r.json")
    assert_bad_input(
        result,
        f"{run / 'student' / 'spec.json'}: student format {FORMAT + 1} (written by amalgam 9.0.0)",
        "or read it with amalgam 9.0.0",
    )
    assert not (tmp_path / "r.json").exists()


def test_resume_refuses_another_format_and_leaves_the_run_as_it_was(student_run, capsys, tmp_path):
    config, run = student_run
    run = _copy(run, tmp_path, record={"format": 1})
    before = _listing(run)
    result = run_cli(capsys, "amalgamate", config, "--out", run, "--resume", "--quiet")
    assert_bad_input(result, "run.json: run dir format 1", "re-run `amalgam amalgamate`")
    assert _listing(run) == before


def test_the_api_raises_the_same_bad_input_error(student_run, tmp_path):
    run = _copy(student_run[1], tmp_path, spec={"format": None})
    with pytest.raises(amalgam.errors.BadInputError, match="student format 1") as raised:
        amalgam.export(run, tmp_path / "student.onnx")
    assert raised.value.exit_code == 2
