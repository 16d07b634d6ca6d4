"""Teachers of two different real architectures amalgamated with no boundary named:
the toolkit lines them up by stride (runtime.align), shows the table (inspect, run
log, branches.json), and a CelebA-layout eval split with no data.labels is scored by
each task's own label name."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml
from PIL import Image

from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.normalize import normalize
from tests.builders import PlainCNN, export, torchvision_teacher
from tests.synthetic import make_images, save_npz

SIZE = 32
ATTRS = ["Smiling", "Male", "Young"]


def celeba_folder(root, n=40, seed=0):
    """A CelebA-layout folder: img_align_celeba/*.jpg, list_attr_celeba.txt (1/-1), list_eval_partition.txt."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for f in files:
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "img_align_celeba" / f)
    rows = [f"{f} " + " ".join(rng.choice(["1", "-1"], len(ATTRS))) for f in files]
    (root / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)}\n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(f"{f} 2" for f in files) + "\n")
    return root


def amalgam(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "amalgam", *map(str, args)], capture_output=True, text=True, **kwargs)


def write_config(root, teachers, tasks, reference, boundaries=None):
    prep = {"size": [SIZE, SIZE], "channels": 3}
    config = {
        "teachers": [
            {
                "name": name,
                "onnx": str(path),
                "preprocess": prep,
                "tasks": [{"name": t, "output": "logits", "index": k} for k, t in enumerate(names)],
            }
            for name, (path, names) in teachers.items()
        ],
        "tasks": tasks,
        "data": {
            "train": {"format": "numpy", "path": str(root / "train.npz")},
            "eval": {"format": "celeba", "path": str(root / "faces"), "split": "test"},
            "holdout": 0.2,
        },
        "student": {"reference": reference},
        "training": {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 50},
        "baseline": {"kd": False},
    }
    for teacher in config["teachers"]:
        teacher["boundaries"] = (boundaries or {}).get(teacher["name"])
    path = root / f"config-{reference}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hetero")
    regnet = torchvision_teacher("regnet_y_400mf", root / "regnet.onnx", size=SIZE, n_out=3)
    resnet = torchvision_teacher("resnet18", root / "resnet.onnx", size=SIZE, n_out=3, seed=1)
    shallow = export(
        PlainCNN(channels=(8, 16), in_ch=3, n_out=3), root / "shallow.onnx", input_shape=(2, 3, SIZE, SIZE)
    )
    save_npz(root / "train.npz", *make_images(300, seed=2))
    celeba_folder(root / "faces")
    teachers = {
        "regnet": (regnet, ["Smiling", "r1", "r2"]),
        "resnet": (resnet, ["Male", "s1", "s2"]),
        "shallow": (shallow, ["Young", "p1", "p2"]),
    }
    return root, teachers


@pytest.mark.slow
def test_two_architectures_amalgamate_lined_up_by_stride(setup):
    root, teachers = setup
    config = write_config(root, {k: teachers[k] for k in ("regnet", "resnet")}, ["Smiling", "Male"], "regnet")
    shown = amalgam("inspect", "--config", config, "--json")
    assert shown.returncode == 0, shown.stderr
    table = json.loads(shown.stdout)["alignment"]["resnet"]
    assert [(r["reference"]["stride"], r["other"]["stride"]) for r in table] == [
        (2, 4),
        (4, 4),
        (8, 8),
        (16, 16),
        (32, 32),
    ]
    assert [r["other"]["channels"] for r in table] == [64, 64, 128, 256, 512]

    out = root / "run"
    done = amalgam("amalgamate", config, "--out", out, "--quiet", "--cache-dir", root / "cache", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    branches = json.loads((out / "branches.json").read_text())
    assert branches["alignment"] == {"resnet": table}
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(e for e in logged if e["event"] == "alignment")["teachers"] == {"resnet": table}
    # no data.labels: each task takes the CelebA attribute of its own name
    rows = {r["task"]: r for r in json.loads((out / "metrics.json").read_text())["eval"]}
    assert set(rows) == {"Smiling", "Male"}
    assert all(r["student"]["f1"] is not None and r["teacher"]["f1"] is not None for r in rows.values())


def test_inspect_shows_the_alignment_of_two_models(setup):
    _, teachers = setup
    shown = amalgam("inspect", teachers["resnet"][0], teachers["regnet"][0])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    rows = lines[lines.index(next(x for x in lines if x.startswith("blocks lined up by stride"))) + 2 :]
    assert len(rows) == 4 and "stride 4, 64 ch" in rows[0] and "stride 4, 48 ch" in rows[0]
    assert "stride 32, 512 ch" in rows[3] and "stride 32, 440 ch" in rows[3]


def test_a_teacher_that_stops_at_a_finer_stride_is_refused(setup):
    root, teachers = setup
    config = write_config(root, {k: teachers[k] for k in ("resnet", "shallow")}, ["Male", "Young"], "resnet")
    done = amalgam("amalgamate", config, "--out", root / "refused", "--quiet")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: teachers[1]") and "'resnet'" in line and "'shallow'" in line
    assert "resnet 4, 8, 16, 32" in line and "shallow 2, 2" in line
    assert not (root / "refused" / "branches.json").exists()


def test_boundaries_named_by_hand_win_and_pair_one_to_one(setup):
    root, teachers = setup
    graph = normalize(onnx.load(teachers["regnet"][0]), [1, 3, SIZE, SIZE])
    named = [b.name for b in find_boundaries(graph)][::-1][:4]  # any four, even out of stride order
    config = write_config(
        root,
        {k: teachers[k] for k in ("resnet", "regnet")},
        ["Male", "Smiling"],
        "resnet",
        boundaries={"regnet": named},
    )
    shown = amalgam("inspect", "--config", config, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [r["other"]["name"] for r in json.loads(shown.stdout)["alignment"]["regnet"]] == named
    config = write_config(
        root,
        {k: teachers[k] for k in ("resnet", "regnet")},
        ["Male", "Smiling"],
        "resnet",
        boundaries={"regnet": named[:3]},
    )
    shown = amalgam("inspect", "--config", config)
    assert shown.returncode == 2
    (line,) = shown.stderr.strip().splitlines()
    assert "teachers.regnet.boundaries: 3 block boundaries" in line and "'resnet' has 4" in line
