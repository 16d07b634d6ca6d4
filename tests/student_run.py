"""One small real run dir shared by the deployment tests (export, validate, run, CI sample).

Two PlainCNN teachers (wide enough that weights dominate the ONNX file, as in a
real model, so int8 can shrink it) trained on easy generated 16x16 images; an
amalgamation of three binary tasks with one epoch per block. Built once per test
session by :func:`student_run`.
"""

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

from tests.builders import export
from tests.synthetic import SIZE, make_images, save_npz, train_teacher

CLASSES = {"A": [0, 1, 2], "B": [5, 6, 7]}
CHOSEN = ["c0", "c2", "c6"]
CHANNELS = (32, 64, 128, 128)
NOISE = 1.0  # easy data: teachers and student near perfect, so the 0.01 F1 gate is meaningful


def write_config(root, train, test, name="config.yaml", extra=None, **training):
    """The run's config (``extra``: more top-level sections, e.g. ``baseline``, replacing these)."""
    prep = {"size": [SIZE, SIZE], "channels": 1}
    config = {
        "teachers": [
            {
                "name": t,
                "onnx": str(root / f"{t.lower()}.onnx"),
                "preprocess": prep,
                "tasks": [{"name": f"c{k}", "output": "logits", "index": i} for i, k in enumerate(classes)],
            }
            for t, classes in CLASSES.items()
        ],
        "tasks": CHOSEN,
        "data": {
            "train": {"format": "numpy", "path": str(train)},
            "eval": {"format": "numpy", "path": str(test)},
            "labels": {name: {"class": int(name[1:])} for name in CHOSEN},
        },
        # hard targets and thresholds at probability 0.5 (below): what these deployment tests were
        # written for, on teachers that decide perfectly at 0.5
        "training": {"epochs_per_block": 1, "finetune_epochs": 2, "batch_size": 64, "targets": "hard", **training},
        # the teacher's full-width trunk: 2 fine-tune epochs would not bring a narrowed one
        # (`width: auto`, tests/test_width_choice.py) up to the teachers' F1, which the gate checks
        "student": {"width": 1.0},
        "baseline": {"kd": False},
        # these briefly trained teachers' probabilities are not calibrated (their mean over-counts
        # positives): the default calibrated thresholds would put them at F1 0.93, the student lower
        "evaluation": {"threshold": "logit0"},
        **(extra or {}),
    }
    path = Path(root) / name
    path.write_text(yaml.safe_dump(config))
    return path


def make_teachers(root):
    """Teacher files, training and evaluation data under ``root``; returns the config path."""
    images, labels = make_images(1500, seed=1, noise=NOISE)
    for i, (name, classes) in enumerate(CLASSES.items()):
        model = train_teacher(classes, images, labels, epochs=2, seed=i + 1, channels=CHANNELS)
        export(model, root / f"{name.lower()}.onnx", input_shape=(2, 1, SIZE, SIZE))
    train = save_npz(root / "train.npz", *make_images(1000, seed=2, noise=NOISE))
    test = save_npz(root / "test.npz", *make_images(600, seed=3, noise=NOISE))
    return write_config(root, train, test)


@contextlib.contextmanager
def one_thread():
    """Train with one torch thread: on a small, busy machine two threads fight (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_BUILT = {}  # each test module that imports the fixture gets its own FixtureDef: build once per process


@pytest.fixture(scope="session")
def student_run(tmp_path_factory):
    """``(config path, run dir)`` of one finished amalgamation."""
    from amalgam.toolkit.config import load_config
    from amalgam.toolkit.method.amalgamate import amalgamate

    if "run" not in _BUILT:
        root = tmp_path_factory.mktemp("deploy")
        with one_thread():
            config = make_teachers(root)
            amalgamate(load_config(config), out=root / "run", quiet=True, cache_root=root / "cache")
        _BUILT["run"] = (config, root / "run")
    return _BUILT["run"]
