"""Multi-class tasks and an output-only teacher through the whole amalgamation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from tests.builders import export
from tests.synthetic import SIZE, make_images, save_npz, train_teacher


def train_mlp(images, labels, epochs=4):
    """A 10-class teacher with no convolutional structure: it can teach only through its outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.from_numpy(images.astype(np.float32) / 255), torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    images, labels = make_images(3000, seed=1)
    export(train_teacher([0, 1, 2], images, labels, seed=1), root / "cnn.onnx", input_shape=(2, 1, SIZE, SIZE))
    export(train_mlp(images, labels), root / "mlp.onnx", input_shape=(2, 1, SIZE, SIZE))
    prep = {"size": [SIZE, SIZE], "channels": 1}
    config = {
        "teachers": [
            {
                "name": "cnn",
                "onnx": str(root / "cnn.onnx"),
                "preprocess": prep,
                "tasks": [{"name": f"is{k}", "output": "logits", "index": k} for k in range(3)],
            },
            {
                "name": "mlp",
                "onnx": str(root / "mlp.onnx"),
                "preprocess": prep,
                "tasks": [{"name": "digit", "output": "logits", "slice": [0, 10], "kind": "multiclass"}],
            },
        ],
        "tasks": ["is0", "digit"],
        "data": {
            "train": {"format": "numpy", "path": str(save_npz(root / "train.npz", *make_images(1500, seed=2)))},
            "eval": {"format": "numpy", "path": str(save_npz(root / "test.npz", *make_images(400, seed=3)))},
            "labels": {"is0": {"class": 0}, "digit": {"classes": "all"}},
        },
        "training": {"epochs_per_block": 1, "finetune_epochs": 2, "batch_size": 64},
        "baseline": {"kd": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amalgam",
            "amalgamate",
            str(root / "config.yaml"),
            "--out",
            str(out),
            "--quiet",
            "--cache-dir",
            str(root / "cache"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return out


def test_output_only_teacher_gets_a_fresh_head(run):
    spec = json.loads((run / "student" / "spec.json").read_text())
    heads = {k: e for k, e in spec["branches"].items() if k.startswith("mlp@")}
    assert len(heads) == 1
    (entry,) = heads.values()
    assert entry["build"]["fresh_head"] == [entry["build"]["gate"][0], 10] and "graph" not in entry


def test_multiclass_task_learns_from_an_output_only_teacher(run):
    metrics = json.loads((run / "metrics.json").read_text())
    digit = next(r for r in metrics["eval"] if r["task"] == "digit")
    assert digit["teacher"]["accuracy"] > 0.6
    assert digit["student"]["agreement"] > 0.3  # chance is 0.1: the fresh head learned from outputs alone
    assert {"agreement", "accuracy", "f1", "f1_margin", "kl_from_teacher"} <= set(digit["student"])
    assert "ap" not in digit["student"]  # average precision is a binary task's
