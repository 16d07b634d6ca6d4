"""The four steps end to end on small real data, through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import yaml

from tests.builders import export
from tests.synthetic import SIZE, make_images, save_npz, train_teacher

CLASSES_A, CLASSES_B = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
CHOSEN = ["c0", "c2", "c4", "c6", "c8"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    images, labels = make_images(3000, seed=1)
    a = train_teacher(CLASSES_A, images, labels, seed=1)
    b = train_teacher(CLASSES_B, images, labels, seed=2)
    export(a, root / "a.onnx", input_shape=(2, 1, SIZE, SIZE))
    export(b, root / "b.onnx", opset=17, dynamo=False, input_shape=(2, 1, SIZE, SIZE))
    train = save_npz(root / "train.npz", *make_images(2000, seed=2))
    test = save_npz(root / "test.npz", *make_images(600, seed=3))
    return root, train, test


def write_config(root, train, test, **training):
    tasks_a = [{"name": f"c{k}", "output": "logits", "index": i} for i, k in enumerate(CLASSES_A)]
    tasks_b = [{"name": f"c{k}", "output": "logits", "index": i} for i, k in enumerate(CLASSES_B)]
    prep = {"size": [SIZE, SIZE], "channels": 1}
    config = {
        "teachers": [
            {"name": "A", "onnx": str(root / "a.onnx"), "preprocess": prep, "tasks": tasks_a},
            {"name": "B", "onnx": str(root / "b.onnx"), "preprocess": prep, "tasks": tasks_b},
        ],
        "tasks": CHOSEN,
        "data": {
            "train": {"format": "numpy", "path": str(train)},
            "eval": {"format": "numpy", "path": str(test)},
            "labels": {f"c{k}": {"class": k} for k in (0, 2, 4, 6, 8)},
            "holdout": 0.25,
        },
        "training": {"epochs_per_block": 1, "finetune_epochs": 2, "batch_size": 64, **training},
        # no size limit: branch points from the loss table alone (the compact default keeps
        # every task after block 4, where this 2-epoch fine-tune trails KD: 0.974 vs 0.982)
        "branching": {"size_budget": None, "max_vs_largest": None},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def amalgam(*args, **kwargs):
    cmd = [sys.executable, "-m", "amalgam", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def run(teachers, tmp_path_factory):
    """One uninterrupted run; the other tests compare against it."""
    root, train, test = teachers
    config = write_config(root, train, test)
    out = tmp_path_factory.mktemp("run") / "run"
    r = amalgam("amalgamate", config, "--out", out, "--quiet", "--cache-dir", out.parent / "cache")
    assert r.returncode == 0, r.stderr
    return config, out, r


def test_four_steps_write_the_run_dir(run):
    config, out, r = run
    for name in (
        "student/spec.json",
        "student/weights.safetensors",
        "kd/spec.json",
        "branches.json",
        "metrics.json",
        "metrics.jsonl",
        "plots/loss_per_stage.png",
        "plots/f1_per_task.png",
    ):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["task"] for r in metrics["eval"]] == CHOSEN
    assert set(metrics["excess_loss"]) == {"1", "2", "3", "4"}
    phases = {json.loads(line).get("phase") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {"stage1", "stage2", "stage3", "stage4", "finetune", "kd"} <= phases
    branches = json.loads((out / "branches.json").read_text())
    assert set(branches["points"]) == set(CHOSEN) and all(1 <= b <= 4 for b in branches["points"].values())
    row = branches["candidates"][0]  # the trade: each candidate's size and loss
    assert {"teacher", "block", "tasks", "excess_loss", "student_params"} <= set(row)
    assert len(branches["candidates"]) == 2 * 4
    # one tail copy per teacher, and one more only for a move of some of its tasks whose
    # held-out gain beat the noise (a conflict with its siblings; how many tasks show one
    # depends on the CPU's float kernels, which train the synthetic teachers a little apart)
    rows, moves = branches["rows"], branches["moves"]
    assert all(m["gain"] > m["noise"] for m in moves)
    for teacher in ("A", "B"):
        own = {r["task"] for r in rows if r["teacher"] == teacher}
        tails = {r["block"] for r in rows if r["teacher"] == teacher}
        conflicts = [m for m in moves if m["teacher"] == teacher and set(m["tasks"]) < own]
        assert len(tails) <= 1 + len(conflicts), (teacher, tails, moves)
    assert "mean F1" in r.stdout
    # each task against its own teacher: the worst one beside the mean, label-free and labeled
    worst = metrics["summary"]["student"]["worst_eval"]
    margins = {r["task"]: r["student"]["f1"] - r["teacher"]["f1"] for r in metrics["eval"]}
    assert {k: worst[k] for k in ("task", "f1_margin")} == {
        "task": min(margins, key=margins.get),
        "f1_margin": min(margins.values()),
    }
    for row in metrics["eval"]:  # a paired bootstrap interval around each task's margin
        lo, hi = row["student"]["f1_margin_ci95"]
        assert lo <= row["student"]["f1_margin"] <= hi
    assert metrics["summary"]["student"]["worst_holdout"]["task"] in CHOSEN
    assert f"worst task: student {worst['task']}" in r.stdout
    # 2 fine-tune epochs of 24 steps: short of what `auto` asks for, said with what to change
    assert any(f["kind"] == "short" and f["task"] is None for f in metrics["lag"])
    assert all(f["change"] in f["line"] and f["line"] in r.stdout for f in metrics["lag"])


def test_student_keeps_up_with_kd_at_equal_epochs(run):
    """Held-out agreement with the teachers: the layer-wise student against multi-teacher
    KD on the same architecture and the same number of epochs (4 x 1 + 2 vs 6)."""
    metrics = json.loads((run[1] / "metrics.json").read_text())
    student = np.mean([r["student"]["agreement"] for r in metrics["holdout"]])
    kd = np.mean([r["kd"]["agreement"] for r in metrics["holdout"]])
    assert student >= 0.95
    assert student >= kd - 0.005, (student, kd)  # 0.005: seed-to-seed spread measured on 500 samples


def test_tasks_not_chosen_are_absent(run):
    out = run[1]
    spec = json.loads((out / "student" / "spec.json").read_text())
    assert spec["task_order"] == CHOSEN and set(spec["tasks"]) == set(CHOSEN)
    for key, entry in spec["branches"].items():
        head = onnx.load(out / "student" / entry["graph"])
        width = head.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        teacher = key.split("@")[0]
        assert width == sum(1 for t in spec["tasks"].values() if t["teacher"] == teacher)


def test_same_seed_same_metrics(run, tmp_path):
    config, out, _ = run
    again = tmp_path / "again"
    r = amalgam("amalgamate", config, "--out", again, "--quiet", "--cache-dir", out.parent / "cache")
    assert r.returncode == 0, r.stderr
    assert json.loads((again / "metrics.json").read_text()) == json.loads((out / "metrics.json").read_text())


def test_killed_run_resumes_to_the_same_metrics(run, tmp_path):
    config, out, _ = run
    resumed = tmp_path / "resumed"
    cmd = [
        sys.executable,
        "-m",
        "amalgam",
        "amalgamate",
        str(config),
        "--out",
        str(resumed),
        "--quiet",
        "--cache-dir",
        str(out.parent / "cache"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (resumed / "checkpoints" / "finetune.pt").exists() and time.time() < deadline:  # mid-phase
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "metrics.json").exists(), "the run finished before it could be killed"
    r = amalgam("amalgamate", config, "--out", resumed, "--quiet", "--resume", "--cache-dir", out.parent / "cache")
    assert r.returncode == 0, r.stderr
    assert json.loads((resumed / "metrics.json").read_text()) == json.loads((out / "metrics.json").read_text())


def test_resume_with_a_changed_config_is_refused(run, tmp_path):
    config, out, _ = run
    r = amalgam("amalgamate", config, "--out", out, "--resume", "--set", "training.lr=0.5")
    assert r.returncode == 2 and "config changed" in r.stderr and "Traceback" not in r.stderr


def test_existing_run_dir_needs_resume_or_overwrite(run):
    config, out, _ = run
    r = amalgam("amalgamate", config, "--out", out)
    assert r.returncode == 2 and "--resume" in r.stderr
