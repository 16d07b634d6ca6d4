import onnx
import pytest
import torch

from runtime.blocks import find_boundaries
from runtime.convert import to_torch
from runtime.cut import cut_block, cut_prefix
from runtime.errors import ConfigError
from tests.builders import PlainCNN, ResidualCNN, export
from toolkit.student.prune import prune_width
from toolkit.student.width import scale_width


def _blocks(model, tmp_path):
    proto = onnx.load(export(model, tmp_path / "m.onnx", opset=17, dynamo=False))
    names = [b.name for b in find_boundaries(proto)]
    graphs = [cut_prefix(proto, names[0])] + [cut_block(proto, a, b) for a, b in zip(names, names[1:])]
    return [to_torch(g) for g in graphs]


@pytest.mark.parametrize("model", [PlainCNN(), ResidualCNN()], ids=["plain", "residual"])
def test_half_width_trunk_runs_and_halves_channels(model, tmp_path):
    blocks = _blocks(model, tmp_path)
    full = [b(torch.zeros(1, 1, 28, 28)) for b in [torch.nn.Sequential(*blocks[: i + 1]) for i in range(len(blocks))]]
    narrow = scale_width(blocks, 0.5)
    h = torch.randn(2, 1, 28, 28, requires_grad=True)
    for block, ref in zip(narrow, full):
        h = block(h)
        assert h.shape[1] == max(1, round(ref.shape[1] * 0.5)) and h.shape[2:] == ref.shape[2:]
    h.sum().backward()


def test_unscalable_layer_is_refused(tmp_path):
    blocks = _blocks(PlainCNN(), tmp_path)
    blocks[0].extra = torch.nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="student.width"):
        scale_width(blocks, 0.5)


def test_pruned_trunk_keeps_the_strongest_filters_and_their_inputs(tmp_path):
    blocks = _blocks(PlainCNN(), tmp_path)
    convs = [m for b in blocks for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    first, second = convs[0].weight.detach().clone(), convs[1].weight.detach().clone()
    narrow = prune_width(blocks, 0.5)
    kept = torch.sort(torch.topk(first.abs().sum(dim=(1, 2, 3)), 4).indices).values
    pruned = [m for b in narrow for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert torch.equal(pruned[0].weight, first[kept])
    # the second conv keeps its strongest filters over the kept inputs, and only those inputs
    keep2 = torch.sort(torch.topk(second[:, kept].abs().sum(dim=(1, 2, 3)), 8).indices).values
    assert torch.equal(pruned[1].weight, second[keep2][:, kept])
    # same shapes as a fresh half-width trunk: a saved student reloads through scale_width
    fresh = scale_width(_blocks(PlainCNN(), tmp_path), 0.5)
    assert [p.shape for b in narrow for p in b.parameters()] == [p.shape for b in fresh for p in b.parameters()]
    h = torch.randn(2, 1, 28, 28)
    for block in narrow:
        h = block(h)
    assert h.shape[1] == 32


def test_pruning_refuses_a_residual_join(tmp_path):
    with pytest.raises(ConfigError, match="residual"):
        prune_width(_blocks(ResidualCNN(), tmp_path), 0.5)
