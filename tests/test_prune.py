"""Residual-aware pruning (``student.init: pruned``, toolkit.student.prune) on real
torchvision architectures: ResNet-18 (residual adds, strided skips) and MobileNetV2
(depthwise convs, linear bottlenecks added across block boundaries), random weights,
exported by the toolkit's torch exporter at its defaults on 32x32 images, cut at
their block boundaries and converted as a run does."""

import onnx
import pytest
import torch

from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_block, cut_prefix
from amalgam.runtime.errors import ConfigError
from amalgam.runtime.normalize import normalize
from amalgam.toolkit.student.prune import prune_width
from amalgam.toolkit.student.width import scale_width, scaled
from tests.builders import PlainCNN, ResidualCNN, export
from tests.zoo_teachers import calibrated

SIZE = 32
ARCHS = ("resnet18", "mobilenet_v2")


def _live(channels, width=0.5):
    """The channels a BatchNorm of ``channels`` features keeps alive: the same set for every
    BatchNorm of that many features, so the tensors a residual add joins agree."""
    order = torch.randperm(channels, generator=torch.Generator().manual_seed(channels))
    return torch.sort(order[: scaled(channels, width)]).values


def _kill_half(model):
    """Every BatchNorm's other channels dead (gamma = beta = 0): after BN folding their filters
    and biases are 0, so dropping them leaves the live channels' values unchanged."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                dead = torch.ones(m.num_features, dtype=torch.bool)
                dead[_live(m.num_features)] = False
                m.weight[dead] = 0
                m.bias[dead] = 0
    return model


def _graphs(model, path):
    export_torch(model, torch.randn(1, 3, SIZE, SIZE), path, log_path=path.with_suffix(".log"))
    proto = normalize(onnx.load(path), [1, 3, SIZE, SIZE])
    names = [b.name for b in find_boundaries(proto)]
    return [cut_prefix(proto, names[0])] + [cut_block(proto, a, b) for a, b in zip(names, names[1:])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Graphs of each teacher by (arch, dead): ``dead`` with half of every group's channels dead."""
    cache = {}

    def get(arch, dead):
        if (arch, dead) not in cache:
            model = calibrated(arch, size=SIZE, num_classes=5)
            path = tmp_path_factory.mktemp(arch) / "teacher.onnx"
            cache[arch, dead] = _graphs(_kill_half(model) if dead else model, path)
        return cache[arch, dead]

    return get


def _convert(graphs):
    return [to_torch(g) for g in graphs]


def _run(blocks, x):
    """Every block's output."""
    outs = []
    for block in blocks:
        x = block(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize("arch", ARCHS)
def test_half_width_has_scale_width_shapes_and_reloads(exported, arch):
    graphs = exported(arch, dead=True)
    pruned = torch.nn.ModuleList(prune_width(_convert(graphs), 0.5))
    fresh = torch.nn.ModuleList(scale_width(_convert(graphs), 0.5))
    assert [(k, p.shape) for k, p in pruned.state_dict().items()] == [
        (k, p.shape) for k, p in fresh.state_dict().items()
    ]
    fresh.load_state_dict(pruned.state_dict())  # what load_student does with a saved student
    x = torch.randn(2, 3, SIZE, SIZE)
    full = _run(_convert(graphs), x)
    outs = _run(pruned, x)
    for out, ref in zip(outs, full):
        assert out.shape[1] == scaled(ref.shape[1], 0.5) and out.shape[2:] == ref.shape[2:]
    outs[-1].sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_dead_channels_pruned_leave_the_live_ones_unchanged(exported, arch):
    """Half of every group's channels dead in the teacher: pruning to 0.5 must drop exactly
    those, in every producer and consumer, so each block's output is the teacher's on the
    live channels."""
    graphs = exported(arch, dead=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        full = _run(_convert(graphs), x)
        outs = _run(prune_width(_convert(graphs), 0.5), x)
    for block, (out, ref) in enumerate(zip(outs, full), start=1):
        live = _live(ref.shape[1])
        dead = torch.ones(ref.shape[1], dtype=torch.bool)
        dead[live] = False
        assert ref[:, dead].abs().max() == 0 and ref[:, live].abs().max() > 0  # the teacher as built
        torch.testing.assert_close(out, ref[:, live], rtol=1e-4, atol=1e-5, msg=f"block {block}")


@pytest.mark.parametrize("arch", ARCHS)
def test_width_one_is_the_teacher_exactly(exported, arch):
    graphs = exported(arch, dead=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for out, ref in zip(_run(prune_width(_convert(graphs), 1.0), x), _run(_convert(graphs), x)):
            assert torch.equal(out, ref)


def _convs(block):
    modules = dict(block.named_modules())
    return [
        modules[n.target]
        for n in block.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], torch.nn.Conv2d)
    ]


def _norms(weight):
    return weight.abs().sum(dim=(1, 2, 3))


def _top(importance, k):
    return torch.sort(torch.topk(importance, k).indices).values


def test_resnet_stage_keeps_one_set_by_summed_importance(exported):
    """ResNet-18's stages: the stem conv and each unit's second conv write the first stage's
    residual stream, so they keep one set, the largest summed L1 norms; the units' first convs
    read exactly that set, and so do the next stage's first conv and strided skip (across the
    block boundary), which with the stage's second convs write the next stream."""
    graphs = exported("resnet18", dead=False)
    blocks = _convert(graphs)
    stem, a1, a2, b1, b2 = [c.weight.detach().clone() for c in _convs(blocks[0])]
    c1, c2, skip, d1, d2 = [c.weight.detach().clone() for c in _convs(blocks[1])]
    stream = _top(sum(_norms(w) for w in (stem, a2, b2)), 32)
    stream2 = _top(sum(_norms(w) for w in (c2, skip, d2)), 64)
    pruned = prune_width(blocks, 0.5)
    p_stem, p_a1, p_a2, p_b1, p_b2 = _convs(pruned[0])
    assert torch.equal(p_stem.weight, stem[stream])
    for p, w in ((p_a1, a1), (p_b1, b1)):
        assert torch.equal(p.weight, w[_top(_norms(w), 32)][:, stream])
    assert torch.equal(p_a2.weight, a2[stream][:, _top(_norms(a1), 32)])
    assert torch.equal(p_b2.weight, b2[stream][:, _top(_norms(b1), 32)])
    p_c1, p_c2, p_skip, _, _ = _convs(pruned[1])
    assert torch.equal(p_c1.weight, c1[_top(_norms(c1), 64)][:, stream])
    assert torch.equal(p_skip.weight, skip[stream2][:, stream])
    assert torch.equal(p_c2.weight, c2[stream2][:, _top(_norms(c1), 64)])


def _small(model, tmp_path):
    proto = onnx.load(export(model, tmp_path / "m.onnx", opset=17, dynamo=False))
    names = [b.name for b in find_boundaries(proto)]
    return _convert([cut_prefix(proto, names[0])] + [cut_block(proto, a, b) for a, b in zip(names, names[1:])])


def test_plain_chain_keeps_the_strongest_filters_and_their_inputs(tmp_path):
    wide = (16, 32, 32, 64)  # 16 -> 8 channels at width 0.5: a real choice (scaled() keeps 8 at least)
    blocks = _small(PlainCNN(wide), tmp_path)
    convs = [c for b in blocks for c in _convs(b)]
    first, second = convs[0].weight.detach().clone(), convs[1].weight.detach().clone()
    narrow = prune_width(blocks, 0.5)
    kept = _top(_norms(first), 8)
    pruned = [c for b in narrow for c in _convs(b)]
    assert torch.equal(pruned[0].weight, first[kept])
    assert torch.equal(pruned[1].weight, second[_top(_norms(second), 16)][:, kept])
    fresh = scale_width(_small(PlainCNN(wide), tmp_path), 0.5)
    assert [p.shape for b in narrow for p in b.parameters()] == [p.shape for b in fresh for p in b.parameters()]


def test_residual_units_prune_and_run(tmp_path):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = _run(prune_width(_small(ResidualCNN(), tmp_path), 0.5), x)[-1]
    assert out.shape[1] == 16


class _Concat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
        self.c = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)))
        return self.head(torch.nn.functional.max_pool2d(y, 2).mean(dim=(2, 3)))


def test_a_concat_is_refused_naming_block_and_layer(tmp_path):
    with pytest.raises(ConfigError, match=r"student.init: pruned: trunk block 1 has a layer '[^']*[Cc]oncat") as e:
        prune_width(_small(_Concat(), tmp_path), 0.5)
    assert "\n" not in str(e.value)
