"""What both real-architecture teachers share: the classes, each teacher's tasks and
labeled slice of Fashion-MNIST, and the command line of the training scripts.

The teachers see Fashion-MNIST as 32x32 RGB: each script resizes the 28x28 grey
images bilinearly (half-pixel centres, the toolkit's own `preprocess: {size: [32,
32], channels: 3}`) and repeats the grey channel, in its own framework. Nothing here
imports a framework, so both environments (.venv, .venv-keras) can use it.
"""

import argparse
from dataclasses import dataclass

import numpy as np

from samples.fashion_mnist.common import CLASSES, DATA, mean_f1, read_idx, task_targets, tasks_arg

__all__ = ["CLASSES", "SIZE", "TEACHERS", "TeacherData", "mean_f1", "parse_args", "tasks_arg"]

SIZE = 32
TEACHERS = {  # name: (its five binary tasks, as class indices; its labeled slice of train)
    "resnet": ([0, 1, 2, 3, 4], slice(0, 10_000)),
    "mobilenet": ([5, 6, 7, 8, 9], slice(10_000, 20_000)),
}
VALID = slice(50_000, 52_000)  # labeled slice for choosing each teacher's best epoch


def parse_args(doc, out_help):
    """The training scripts' command line: OUT, --data, --epochs, --seed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("out", help=out_help)
    ap.add_argument("--data", default=str(DATA), help="folder of Fashion-MNIST IDX files")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


@dataclass
class TeacherData:
    """One teacher's labeled slice, the validation slice and the test split: 28x28 grey
    images (n, 28, 28) in [0, 1] and their task targets (n, 5)."""

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

    def tasks(self):
        """The exporter's ``--tasks`` spelling: ``logits:tshirt,trouser,...``."""
        return tasks_arg(self.classes)
