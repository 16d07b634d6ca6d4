import onnx
import pytest
import torch

from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_block, cut_prefix
from amalgam.runtime.errors import ConfigError
from amalgam.toolkit.student.width import scale_width, scaled
from tests.builders import PlainCNN, ResidualCNN, export


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
        assert h.shape[1] == scaled(ref.shape[1], 0.5) and h.shape[2:] == ref.shape[2:]
    h.sum().backward()


def test_unscalable_layer_is_refused(tmp_path):
    blocks = _blocks(PlainCNN(), tmp_path)
    blocks[0].extra = torch.nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="student.width"):
        scale_width(blocks, 0.5)
