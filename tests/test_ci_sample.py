"""The sample CI workflow gates every edge artifact on exactly the `amalgam validate` line it holds."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from tests.student_run import edge_export, student_run  # noqa: F401 (fixtures)

WORKFLOW = Path(__file__).parents[1] / "samples" / "ci" / "amalgam-gate.yml"


def workflow_commands():
    """Every `run:` line of every step of every job, in order."""
    data = yaml.safe_load(WORKFLOW.read_text())
    return [
        line.strip()
        for job in data["jobs"].values()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
        if line.strip()
    ]


def gate_command():
    found = [c for c in workflow_commands() if c.startswith("amalgam validate ")]
    assert len(found) == 1, found
    return shlex.split(found[0])


def test_the_workflow_is_a_github_actions_job_that_installs_exports_and_gates():
    data = yaml.safe_load(WORKFLOW.read_text())
    assert set(data["jobs"]["gate"]) >= {"runs-on", "steps"}
    commands = workflow_commands()
    assert any("pip install" in c and "amalgam-onnx[cpu,edge]" in c for c in commands)
    assert any("onnx2tf" in c for c in commands)  # the TFLite converter's own environment
    export = next(c for c in commands if c.startswith("amalgam export "))
    assert shlex.split(export)[shlex.split(export).index("--target") + 1] == "all"
    argv = gate_command()
    assert argv[2] == shlex.split(export)[shlex.split(export).index("-o") + 1]  # validates what was exported
    assert argv[argv.index("--max-degradation") + 1] == "0.01"


@pytest.fixture(scope="module")
def workspace(student_run, edge_export, tmp_path_factory):
    """A checkout as the workflow sees it: the run dir and the export step's folder (the
    shared export of every target, pointed at this copy of the run)."""
    argv = gate_command()
    root = tmp_path_factory.mktemp("ci")
    run = root / argv[argv.index("--run") + 1]
    run.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(student_run[1], run, ignore=shutil.ignore_patterns("cache", "checkpoints"))
    shutil.copytree(edge_export[0], root / argv[2])
    return root


def run_gate(cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(gate_command(), cwd=cwd, env=env, capture_output=True, text=True)


def test_the_gate_passes_a_good_student(workspace):
    r = run_gate(workspace)
    assert r.returncode == 0, r.stderr
    folder = workspace / gate_command()[2]
    assert (folder / "validation.json").is_file() and (folder / "report.md").is_file()


def test_the_gate_fails_a_perturbed_student(workspace, tmp_path):
    bad = tmp_path / "ws"
    shutil.copytree(workspace, bad, symlinks=True)
    student = bad / gate_command()[2] / "student_fp16.onnx"
    model = onnx.load(str(student))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = onnx.numpy_helper.to_array(weight)
    weight.CopyFrom(onnx.numpy_helper.from_array(values * 1.05, weight.name))
    onnx.save(model, str(student))
    r = run_gate(bad)
    assert r.returncode == 1, r.stderr
    assert "artifact onnx-fp16 (student_fp16.onnx)" in r.stderr and "1 of " in r.stderr
