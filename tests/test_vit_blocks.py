"""A transformer teacher's token boundaries: torchvision's VisionTransformer (32x32
images, 4x4 patches: an 8x8 grid and a class token, 3 encoder layers) at random
weights, its zero head made random so that the logits, and parity, mean something."""

import json

import onnx
import pytest
import torch
import torchvision

from amalgam.runtime.align import align
from amalgam.runtime.blocks import Boundary, dominates_outputs, find_boundaries
from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.graph import upstream
from amalgam.runtime.normalize import normalize
from amalgam.runtime.teacher import TaskSpec, open_teacher
from tests.builders import export
from tests.frameworks.cli import amalgam

VIT = dict(image_size=32, patch_size=4, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(**VIT)
    torch.nn.init.normal_(model.heads.head.weight, std=VIT["hidden_dim"] ** -0.5)
    path = tmp_path_factory.mktemp("vit") / "vit.onnx"
    return export(model, path, input_shape=(2, 3, 32, 32))


def test_each_encoder_layer_ends_in_a_token_boundary(vit):
    model = normalize(onnx.load(str(vit)))
    blocks = find_boundaries(model)
    assert [(b.kind, b.shape[1:], b.grid, b.stride, b.extra_tokens) for b in blocks] == [
        ("tokens", [65, 32], (8, 8), 4, 1)
    ] * 3
    assert all(dominates_outputs(model, b.name) for b in blocks)
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers[b.name].op_type == "Add" for b in blocks)
    softmaxes = [n.output[0] for n in model.graph.node if n.op_type == "Softmax"]
    # after the MLP residual: layer i's boundary comes after i attention blocks, not before the i-th ends
    assert [len(set(softmaxes) & upstream(model.graph.node, b.name)) for b in blocks] == [1, 2, 3]


def test_inspect_check_converts_every_token_boundary(vit, capsys):
    code, captured = amalgam(capsys, "inspect", vit, "--check", "--json")
    assert code == 0, captured.err
    blocks = json.loads(captured.out)["blocks"]
    assert len(blocks) == 3
    assert all(b["kind"] == "tokens" and b["grid"] == [8, 8] and b["stride"] == 4 for b in blocks)
    assert all(
        b["extra_tokens"] == 1 and b["extra_at"] == "start" and b["branch_ok"] and b["branch_max_abs_diff"] <= 1e-4
        for b in blocks
    )
    code, captured = amalgam(capsys, "inspect", vit)
    assert code == 0 and captured.out.count("tokens: grid 8x8 + 1 extra, stride 4") == 3


def test_a_vit_teacher_keeps_its_token_boundaries(vit):
    """A ViT teacher's found or named token boundaries are kept (runtime.align lines them up with a
    CNN reference's blocks); one whose patch grid the graph does not tell is refused by name."""
    task = [TaskSpec("a", "logits", index=0)]
    found = open_teacher(vit, task, (1, 3, 32, 32)).boundaries
    assert [(b.kind, b.grid, b.extra_tokens, b.extra_at) for b in found] == [("tokens", (8, 8), 1, "start")] * 3
    named = open_teacher(vit, task, (1, 3, 32, 32), [found[0].name]).boundaries
    assert named == found[:1]
    cnn = [Boundary("relu", ["batch", 8, 8, 8], "NCHW")]
    unknown = [Boundary(found[0].name, ["batch", 65, 32], "unknown", "tokens", (8, 8), 4, 1)]
    with pytest.raises(BoundaryError, match="'V': token boundary .* patch grid is not known"):
        align(cnn, (32, 32), unknown, (32, 32), ("C", "V"))
