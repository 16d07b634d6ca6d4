"""The four steps end to end on small real data, through the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.builders import export
from tests.synthetic import SIZE, make_images, save_npz, train_teacher

CLASSES_A, CLASSES_B = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


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
        "tasks": ["c0", "c2", "c4", "c6", "c8"],
        "data": {"train": {"format": "numpy", "path": str(train)},
                 "eval": {"format": "numpy", "path": str(test)},
                 "labels": {f"c{k}": {"class": k} for k in (0, 2, 4, 6, 8)}},
        "training": {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 64, **training},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def amalgam(*args):
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *map(str, args)], capture_output=True, text=True)


def test_four_steps_write_the_run_dir(teachers, tmp_path):
    root, train, test = teachers
    config = write_config(root, train, test)
    out = tmp_path / "run"
    r = amalgam("amalgamate", config, "--out", out, "--quiet", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    for name in ("student/spec.json", "student/weights.safetensors", "kd/spec.json", "branches.json",
                 "metrics.json", "metrics.jsonl", "plots/loss_per_stage.png", "plots/f1_per_task.png"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["task"] for r in metrics["eval"]] == ["c0", "c2", "c4", "c6", "c8"]
    assert metrics["summary"]["student"]["agreement"] > 0.8
    stages = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"stage1", "stage4", "finetune", "kd"} <= {s.get("phase") for s in stages}
    assert "mean F1" in r.stdout
