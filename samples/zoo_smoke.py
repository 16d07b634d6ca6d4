"""The zoo's amalgamation smoke: one exported zoo model as a teacher beside a small CNN, one epoch each.

    .venv/bin/python samples/zoo_smoke.py MODEL.onnx --size S --work DIR [--cnn-trunk]

In ``--work``: :data:`IMAGES` generated RGB images at the model's input size (smooth random
colour fields with noise: no labels, no eval set), a small CNN teacher (stride-2 blocks down
to 1x1, so that its strides reach every reference's coarsest, random weights, exported with
the project's exporter), and a config choosing logits 0 and 1 of the zoo model and logit 0
of the CNN as binary tasks. Then ``amalgam amalgamate`` runs in this process: the zoo model
is ``student.reference`` (its blocks are the trunk, at ``--width``: by default
:data:`WIDTH`, randomly initialised; at 1, the model's own weights), or, with ``--cnn-trunk`` (a model without two
feature-map boundaries, such as a ViT), the CNN is, and the zoo model teaches beside it: through its token
features where they line up with the CNN's blocks, else through its outputs. One epoch per block and
one fine-tune epoch, no size limit, fixed branch points (every task after the last block),
no KD baseline: what the smoke asks is that every step of a run goes through. It exits as
the command does: 0, or an ``error:`` line and exit 2 (a refusal) or 1.
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from torch import nn

from amalgam.exporters.torch_export import export_torch
from amalgam.toolkit.cli import main as amalgam

IMAGES = 200
WIDTH = 0.25  # the narrowest trunk `student.width: auto` takes
ZOO_TASKS = 2  # logits 0 and 1 of the zoo model


class SmallCNN(nn.Module):
    """Stride-2 conv-BN-ReLU blocks of ``width`` channels down to 1x1, a global pool, one linear head."""

    def __init__(self, size, width=8, n_out=1):
        super().__init__()
        layers, channels = [], 3
        while size > 1:
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
            channels, size = width, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def images(n, size, seed=0):
    """``n`` RGB images (uint8, NHWC): random colour fields on an 8-pixel grid, plus noise."""
    rng = np.random.default_rng(seed)
    cells = -(-size // 8)
    fields = rng.uniform(0, 255, (n, cells, cells, 3)).repeat(8, axis=1).repeat(8, axis=2)[:, :size, :size]
    return np.clip(fields + rng.normal(0, 20, fields.shape), 0, 255).astype(np.uint8)


def small_cnn(path, size, log):
    """The small CNN teacher at ``size`` x ``size``, exported to ``path``."""
    torch.manual_seed(0)
    sample = torch.randn(2, 3, size, size)
    return export_torch(SmallCNN(size), sample, path, ["x"], ["logits"], log_path=log)


def write_config(work, model, size, cnn_trunk, width):
    """The smoke's config in ``work``; the zoo model's tasks read its first output."""
    output = onnx.load(str(model), load_external_data=False).graph.output[0].name
    prep = {"size": [size, size], "channels": 3, "mean": [0.5], "std": [0.25]}
    zoo_tasks = [{"name": f"zoo{k}", "output": output, "index": k} for k in range(ZOO_TASKS)]
    cnn_tasks = [{"name": "cnn0", "output": "logits", "index": 0}]
    config = {
        "teachers": [
            {"name": "zoo", "onnx": str(model), "preprocess": prep, "tasks": zoo_tasks},
            {"name": "cnn", "onnx": str(work / "cnn.onnx"), "preprocess": prep, "tasks": cnn_tasks},
        ],
        "data": {"train": {"format": "numpy", "path": str(work / "train.npz")}, "holdout": 0.2},
        "student": {"reference": "cnn" if cnn_trunk else "zoo", "width": width},
        "training": {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 50},
        "branching": {"mode": "fixed", "size_budget": None, "max_vs_largest": None},
        "baseline": {"kd": False},
        "evaluation": {"threshold": "logit0"},
    }
    path = work / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="the zoo model's ONNX file")
    ap.add_argument("--size", type=int, required=True, help="its square input size")
    ap.add_argument("--work", type=Path, required=True, help="a folder for the data, the CNN, the config and the run")
    ap.add_argument("--cnn-trunk", action="store_true", help="the CNN gives the trunk; the model teaches beside it")
    ap.add_argument("--width", type=float, default=WIDTH, help="the trunk's width multiplier")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "train.npz", images=images(IMAGES, args.size))
    small_cnn(work / "cnn.onnx", args.size, work / "cnn-export.log")
    config = write_config(work, args.model.resolve(), args.size, args.cnn_trunk, args.width)
    amalgam(["amalgamate", str(config), "--out", str(work / "run"), "--quiet", "--cache-dir", str(work / "cache")])


if __name__ == "__main__":
    main()
