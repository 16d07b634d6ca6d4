"""The committed Fashion-MNIST sample: its ONNX teachers, its config, and a tiny run of it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amalgam.exporters.metadata import read_metadata
from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.model_io import load_model
from amalgam.runtime.session import make_session
from amalgam.toolkit.config import load_config

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "fashion_mnist"
CONFIG = SAMPLE / "config.yaml"
TASKS = {
    "teacher_a.onnx": ["tshirt", "trouser", "pullover", "dress", "coat"],
    "teacher_b.onnx": ["sandal", "shirt", "sneaker", "bag", "boot"],
}
DATA = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_teacher_loads_and_declares_its_tasks(name):
    import numpy as np

    model = load_model(SAMPLE / name)
    meta = read_metadata(model)
    assert [t["name"] for t in meta["tasks"]] == TASKS[name]
    assert all(t["output"] == "logits" and t["kind"] == "binary" for t in meta["tasks"])
    session = make_session(SAMPLE / name, spinning=False)
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert session.run(["logits"], {session.get_inputs()[0].name: x})[0].shape == (3, 5)


def test_teachers_line_up_block_by_block():
    a, b = (find_boundaries(load_model(SAMPLE / n)) for n in sorted(TASKS))
    assert len(a) == len(b) == 4
    assert [x.shape[1:] for x in a[:3]] == [x.shape[1:] for x in b[:3]]


def test_config_validates_and_chooses_tasks_from_both_teachers():
    config = load_config(CONFIG)
    assert [(t, task["name"]) for t, task in config.chosen_tasks()] == [
        ("A", "tshirt"),
        ("A", "pullover"),
        ("A", "coat"),
        ("B", "shirt"),
        ("B", "sneaker"),
    ]
    assert all(Path(t.onnx).is_file() for t in config.teachers)
    assert set(config.data.labels) == {"tshirt", "pullover", "coat", "shirt", "sneaker"}


@pytest.mark.skipif(not DATA.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
def test_sample_config_amalgamates_on_a_subset(tmp_path):
    sets = [
        "data.train.limit=300",
        "data.eval.limit=200",
        "training.finetune_epochs=1",
        "training.batch_size=64",
        "baseline.kd=false",
    ]
    cmd = [
        sys.executable,
        "-m",
        "amalgam",
        "amalgamate",
        str(CONFIG),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        *[a for s in sets for a in ("--set", s)],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["task"] for r in metrics["eval"]] == ["tshirt", "pullover", "coat", "shirt", "sneaker"]
    assert all(r["student"]["f1"] is not None and r["teacher"]["f1"] is not None for r in metrics["eval"])
    # compact by default: the config sets no size key, and `width: auto` narrows the trunk
    # until the student is within both default bounds (0.6x both teachers, at most the larger)
    assert 0 < metrics["params"]["ratio"] <= 0.6 and metrics["params"]["ratio_largest"] <= 1.0


def test_real_archs_config_names_no_boundaries():
    """samples/real_archs: two architectures that line up by stride alone (`make demo-real` runs it)."""
    config = load_config(SAMPLE.parent / "real_archs" / "config.yaml")
    assert [t.boundaries for t in config.teachers] == [None, None]
    assert [(t, task["name"]) for t, task in config.chosen_tasks()] == [
        ("R", "tshirt"),
        ("R", "pullover"),
        ("R", "coat"),
        ("M", "shirt"),
        ("M", "sneaker"),
    ]
    assert [Path(t.onnx).name for t in config.teachers] == ["resnet18.onnx", "mobilenet_v2.onnx"]
    assert config.student.reference == "R"


def test_vit_cnn_config_is_facts_and_a_cnn_reference():
    """samples/vit_cnn: a ViT teacher beside a CNN teacher, the CNN the reference (`make demo-vit` runs it)."""
    config = load_config(SAMPLE.parent / "vit_cnn" / "config.yaml")
    assert [(t.name, Path(t.onnx).name, t.boundaries) for t in config.teachers] == [
        ("C", "cnn.onnx", None),
        ("V", "vit.onnx", None),
    ]
    assert [(t, task["name"]) for t, task in config.chosen_tasks()] == [
        ("C", "tshirt"),
        ("C", "pullover"),
        ("C", "coat"),
        ("V", "shirt"),
        ("V", "sneaker"),
    ]
    assert config.student.reference == "C"
