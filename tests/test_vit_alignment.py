"""A ViT teacher beside a CNN teacher: its token boundaries line up with the CNN's
blocks (runtime.align, by relative depth, its patch tokens read as a map at stride =
patch size: runtime.tokens), and a CNN student's trunk learns from its token features.

torchvision's VisionTransformer (32x32 images, 4x4 patches: an 8x8 grid and a class
token, 3 encoder layers) and a PlainCNN with boundaries at strides 2, 4, 8, 8, both at
random weights (the ViT's zero head made random), exported to ONNX."""

import json

import numpy as np
import pytest
import torch
import torchvision
import yaml

from amalgam.runtime.align import align
from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.teacher import TaskSpec, open_teacher
from amalgam.runtime.tokens import tokens_to_map
from amalgam.toolkit.student.adapters import TokenAdapter, fit_adapter
from tests.builders import PlainCNN, export
from tests.frameworks.cli import amalgam
from tests.synthetic import make_images, save_npz

SIZE = 32
VIT = dict(image_size=SIZE, patch_size=4, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
TASK = [TaskSpec("a", "logits", index=0)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit_cnn")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(**VIT)
    torch.nn.init.normal_(vit.heads.head.weight, std=VIT["hidden_dim"] ** -0.5)
    cnn = PlainCNN(channels=(8, 16, 32, 64), in_ch=3, n_out=3).eval()
    shape = (2, 3, SIZE, SIZE)
    return root, export(cnn, root / "cnn.onnx", input_shape=shape), export(vit, root / "vit.onnx", input_shape=shape)


def opened(path, copied="branches"):
    return open_teacher(path, TASK, (1, 3, SIZE, SIZE), copied=copied)


def test_the_vit_token_boundary_lines_up_with_the_cnn_block_at_stride_4(models, capsys):
    _, cnn, vit = models
    code, captured = amalgam(capsys, "inspect", cnn, vit, "--json")
    assert code == 0, captured.err
    rows = json.loads(captured.out)["alignment"]
    assert [(r["reference"]["stride"], r["other"]["stride"]) for r in rows] == [(2, 4), (4, 4), (8, 4), (8, 4)]
    # relative depth: block l of 4 with encoder layer ceil(3 l / 4) of 3
    names = [r["other"]["name"] for r in rows]
    layers = [b.name for b in opened(vit).boundaries]
    assert names == [layers[0], layers[1], layers[2], layers[2]]
    at_4 = rows[1]
    assert at_4["reference"] == {
        "name": at_4["reference"]["name"],
        "kind": "map",
        "stride": 4,
        "channels": 16,
        "size": [8, 8],
    }
    assert at_4["other"] | {"name": None} == {
        "name": None,
        "kind": "tokens",
        "stride": 4,
        "channels": 32,
        "size": [8, 8],
        "grid": [8, 8],
        "extra_tokens": 1,
        "extra_at": "start",
    }
    assert at_4["adapter"] == "map -> tokens: 32x8x8 as 64 patches + 1 extra at the start"
    code, captured = amalgam(capsys, "inspect", cnn, vit)
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("blocks lined up by stride"))) + 2 :]
    assert "stride 4, 16 ch" in table[1] and "tokens 1+8x8, stride 4, 32 dim" in table[1]
    assert "resized" not in table[1] and "(map -> tokens: 32x8x8 as 64 patches" in table[1]
    assert "(resized, map -> tokens" in table[0] and "(resized, map -> tokens" in table[3]


def test_tokens_to_map_is_the_patch_grid_of_a_real_ort_output(models):
    """The patch tokens of a real ONNX Runtime tap, reshaped by hand, are the adapter's map;
    a TokenAdapter lays a map out as those tokens again, and its least-squares start fits them."""
    _, _, vit = models
    teacher = opened(vit)
    boundary = teacher.boundaries[1]
    images = np.random.default_rng(0).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)
    tokens = teacher.runner.run(images).taps[boundary.name]
    assert tokens.shape == (4, 65, 32)
    by_hand = np.empty((4, 32, 8, 8), np.float32)
    for i in range(8):
        for j in range(8):
            by_hand[:, :, i, j] = tokens[:, 1 + 8 * i + j, :]  # token 0: the class token
    np.testing.assert_array_equal(tokens_to_map(tokens, boundary), by_hand)
    np.testing.assert_array_equal(tokens_to_map(torch.from_numpy(tokens), boundary).numpy(), by_hand)

    adapter = TokenAdapter(32, (32, 8, 8), 1, "start")
    made = adapter(torch.from_numpy(by_hand))
    assert made.shape == (4, 65, 32)
    torch.testing.assert_close(tokens_to_map(made, adapter), adapter.to_map(torch.from_numpy(by_hand)))
    fit_adapter(adapter, torch.from_numpy(by_hand), torch.from_numpy(tokens), ridge=1e-9)  # the identity, exactly
    with torch.no_grad():
        torch.testing.assert_close(adapter(torch.from_numpy(by_hand)), torch.from_numpy(tokens), atol=1e-4, rtol=1e-3)


def test_a_vit_reference_is_refused_in_one_line(models, capsys):
    root, cnn, vit = models
    with pytest.raises(BoundaryError, match="trunk is cut from feature maps only") as refused:
        opened(vit, copied="all")
    assert refused.value.part == "trunk"
    with pytest.raises(BoundaryError, match="make a CNN teacher the reference"):
        align(opened(vit).boundaries, (SIZE, SIZE), opened(cnn).boundaries, (SIZE, SIZE))
    code, captured = amalgam(capsys, "inspect", vit, cnn)
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "token sequences" in line and "make a CNN teacher the reference" in line
    config = write_config(root, cnn, vit, reference="vit")
    code, captured = amalgam(capsys, "amalgamate", config, "--out", root / "refused", "--quiet")
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: teachers[1] (student.reference)") and "trunk is cut from feature maps only" in line
    assert not (root / "refused" / "branches.json").exists()


def write_config(root, cnn, vit, reference="cnn"):
    prep = {"size": [SIZE, SIZE], "channels": 3}
    teachers = {"cnn": (cnn, ["c0", "c1", "c2"]), "vit": (vit, ["v0", "v1", "v2"])}
    config = {
        "teachers": [
            {
                "name": name,
                "onnx": str(path),
                "preprocess": prep,
                "tasks": [{"name": t, "output": "logits", "index": k} for k, t in enumerate(tasks)],
            }
            for name, (path, tasks) in teachers.items()
        ],
        "tasks": ["c0", "c1", "v0", "v2"],
        "data": {"train": {"format": "numpy", "path": str(root / "train.npz")}, "holdout": 0.2},
        "student": {"reference": reference},
        "training": {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 50},
        "baseline": {"kd": False},
    }
    save_npz(root / "train.npz", *make_images(300, seed=2))
    path = root / f"config-{reference}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_cnn_trunk_learns_from_the_vit_token_features(models, capsys):
    root, cnn, vit = models
    config = write_config(root, cnn, vit)
    out = root / "run"
    code, captured = amalgam(capsys, "amalgamate", config, "--out", out, "--quiet", "--cache-dir", root / "cache")
    assert code == 0, captured.err[-3000:]
    table = json.loads((out / "branches.json").read_text())["alignment"]["vit"]
    assert [(r["reference"]["stride"], r["other"]["kind"], r["other"]["stride"]) for r in table] == [
        (2, "tokens", 4),
        (4, "tokens", 4),
        (8, "tokens", 4),
        (8, "tokens", 4),
    ]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(e for e in logged if e["event"] == "alignment")["teachers"] == {"vit": table}
    assert [e["block"] for e in logged if e["event"] == "stage"] == [1, 2, 3, 4]
    assert all(np.isfinite(e["loss"]) for e in logged if e["event"] == "epoch")
    # the ViT's branch: its layers after a token boundary, behind a map -> tokens adapter
    branch = next(
        b
        for key, b in json.loads((out / "student" / "spec.json").read_text())["branches"].items()
        if key.startswith("vit@")
    )
    assert branch["build"]["adapter"][1:] == [[32, 8, 8], "tokens", True, [1, "start"]]
    # the student with its ViT branch exports, and ONNX Runtime matches the PyTorch student
    student = root / "student.onnx"
    code, captured = amalgam(capsys, "export", out, "-o", student)
    assert code == 0, captured.err[-3000:]
    code, captured = amalgam(capsys, "validate", student, "--run", out)
    assert code == 0 and "numeric parity" in captured.out and ": pass" in captured.out, captured.err[-3000:]


class TokenAtTheEnd(torch.nn.Module):
    """Patch tokens, then a learned token appended after them, and two residual MLP layers."""

    def __init__(self, dim=8):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, dim, 4, 4)
        self.token = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.mlps = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.GELU()) for _ in "ab")
        self.head = torch.nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([x, self.token.expand(x.shape[0], -1, -1)], dim=1)
        for mlp in self.mlps:
            x = x + mlp(x)
        return self.head(x[:, -1])


def test_extra_tokens_after_the_patches_are_read_from_the_graph(tmp_path):
    torch.manual_seed(0)
    path = export(TokenAtTheEnd().eval(), tmp_path / "end.onnx", input_shape=(2, 3, SIZE, SIZE))
    teacher = opened(path)
    assert [(b.grid, b.stride, b.extra_tokens, b.extra_at) for b in teacher.boundaries] == [((8, 8), 4, 1, "end")] * 2
    images = np.random.default_rng(1).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    tokens = teacher.runner.run(images).taps[teacher.boundaries[0].name]
    grid = tokens_to_map(tokens, teacher.boundaries[0])
    np.testing.assert_array_equal(grid[:, :, 2, 3], tokens[:, 8 * 2 + 3])  # the learned token is row 64, dropped
