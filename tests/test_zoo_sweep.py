"""samples/zoo.py, the torchvision zoo sweep: how a step's end becomes an outcome, and a
sweep of two small models (MNASNet through ``--weights``, whose safetensors path once
raised ValueError, and SqueezeNet) that passes, then resumes without redoing them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from samples.zoo import outputs_only, step

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mnasnet0_5", "squeezenet1_1")


def _python(code):
    return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    "code, outcome, line",
    [
        ("print('ok')", "pass", None),
        ("import sys; print('error: bad input', file=sys.stderr); sys.exit(2)", "refused", "error: bad input"),
        ("raise ValueError('boom')", "failed", "ValueError: boom"),
        (
            "import sys; print('error: 2 of 9 branches differ', file=sys.stderr); sys.exit(1)",
            "failed",
            "error: 2 of 9 branches differ",
        ),
        ("import time; time.sleep(30)", "failed", "timed out after 2s"),
    ],
)
def test_a_step_ends_as_pass_refused_or_failed(code, outcome, line):
    got, last, _, _ = step(_python(code), timeout=2)
    assert (got, last) == (outcome, line)


def test_under_two_converting_boundaries_is_outputs_only():
    assert outputs_only({"boundaries": 0, "convert": 0})["outcome"] == "outputs only"
    assert outputs_only({"boundaries": 3, "convert": 1})["detail"].startswith("1 of 3 boundaries convert")
    assert outputs_only({"boundaries": 3, "convert": 2}) == {}
    tokens = outputs_only({"boundaries": 12, "convert": 12, "tokens": 12})  # a ViT's encoder layers
    assert tokens["outcome"] == "outputs only" and "12 of them token sequences" in tokens["detail"]


def _sweep(out):
    cmd = [sys.executable, "samples/zoo.py", "--models", ",".join(MODELS), "--out", str(out), "--timeout", "300"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_small_models_pass_and_a_second_sweep_redoes_nothing(tmp_path):
    done = _sweep(tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "zoo.json").read_text())["rows"]
    assert [r["model"] for r in rows] == [f"torchvision:{m}" for m in MODELS]
    for r in rows:
        assert (r["outcome"], r["detail"]) == ("pass", None), r
        assert list(r["steps"]) == ["probe", "export", "export --weights", "inspect"]
        assert r["input"] == [1, 3, 32, 32] and r["exporter_weights"] == "dynamo"
        assert r["convert"] == r["boundaries"] >= 2, r
    table = (tmp_path / "zoo.md").read_text()
    assert "| `torchvision:mnasnet0_5` |" in table and "Traceback" not in table
    again = _sweep(tmp_path)
    assert again.returncode == 0 and "zoo:" not in again.stdout, again.stdout
    assert json.loads((tmp_path / "zoo.json").read_text())["rows"] == rows
