"""What both Fashion-MNIST teachers share: the classes, each teacher's tasks and labeled subset.

Teacher A (PyTorch) and teacher B (JAX/Flax) are the same 4-block CNN, each trained
with labels on its own disjoint 10k-image slice of the train split; the student
later learns from all 60k train images without labels. Nothing here imports a
framework, so both environments (.venv, .venv-jax) can use it.
"""

import argparse
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
TEACHERS = {  # name: (its five binary tasks, as class indices; its labeled slice of train)
    "a": ([0, 1, 2, 3, 4], slice(0, 10_000)),
    "b": ([5, 6, 7, 8, 9], slice(10_000, 20_000)),
}
CHANNELS = (16, 32, 64, 128)
VALID = slice(50_000, 55_000)  # labeled slice for choosing each teacher's best epoch


def read_idx(folder, split):
    """(images float32 (n, 28, 28) in [0, 1], labels int64 (n,)) of an IDX split."""
    stem = "train" if split == "train" else "t10k"
    with gzip.open(Path(folder) / f"{stem}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(Path(folder) / f"{stem}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images.astype(np.float32) / 255.0, labels


def task_targets(labels, classes):
    """(n, len(classes)) 0/1 targets: task k is "is this image of class classes[k]"."""
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float32)


def tasks_arg(classes):
    """The exporter's ``--tasks`` spelling for one teacher: ``logits:tshirt,trouser,...``."""
    return "logits:" + ",".join(CLASSES[c] for c in classes)


def mean_f1(logits, targets):
    """Mean binary F1 over the tasks, deciding at logit 0."""
    pred = logits > 0
    tp = (pred & (targets > 0.5)).sum(0)
    f1 = 2 * tp / np.maximum(pred.sum(0) + (targets > 0.5).sum(0), 1)
    return float(f1.mean())


def parse_args(doc, out_help):
    """The training scripts' command line: OUT, --data, --epochs, --seed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("out", help=out_help)
    ap.add_argument("--data", default=str(DATA), help="folder of Fashion-MNIST IDX files")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


@dataclass
class TeacherData:
    """One teacher's labeled slice, the validation slice and the test split, as task targets."""

    classes: list
    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @classmethod
    def load(cls, folder, teacher):
        classes, part = TEACHERS[teacher]
        images, labels = read_idx(folder, "train")
        test_x, test_y = read_idx(folder, "test")
        return cls(
            classes,
            images[part],
            task_targets(labels[part], classes),
            images[VALID],
            task_targets(labels[VALID], classes),
            test_x,
            task_targets(test_y, classes),
        )

    def summary(self, valid_f1, test_logits):
        return f"kept validation F1 {valid_f1:.4f}; test mean F1 {mean_f1(test_logits, self.test_y):.4f}"
