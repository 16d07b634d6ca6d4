"""A branch outside the float32 tolerance is judged against its own float64 run
(runtime.inspection.judge_branch): float32 rounding passes, a wrong conversion does not.

On a real 25M-parameter network (torchvision ResNet-50, random weights, 64x64), the
branch after its first block, converted to torch, against ONNX Runtime: at a tolerance
tighter than float32 can hold (atol 1e-9, no relative terms) the correct branch fails
element-wise and passes against its float64 run; the same branch with one convolution's
weights 0.1% off (what a BatchNorm epsilon of 1e-3 instead of 1e-5 does to a folded
convolution) fails both ways, at the defaults too."""

import onnx
import pytest
import torch
import torchvision

from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_branch
from amalgam.runtime.inspection import judge_branch
from amalgam.runtime.normalize import normalize
from amalgam.runtime.parity import compare, onnx_runner
from amalgam.runtime.taps import add_taps

pytestmark = pytest.mark.slow
TIGHT = {"atol": 1e-9, "rtol": 0.0, "srtol": 0.0}


@pytest.fixture(scope="module")
def branch(tmp_path_factory):
    torch.manual_seed(0)
    module = torchvision.models.resnet50(weights=None).eval()
    x = torch.rand(2, 3, 64, 64)
    path = export_torch(
        module, x, tmp_path_factory.mktemp("r50") / "r50.onnx", input_names=["x"], output_names=["logits"]
    )
    graph = normalize(onnx.load(str(path)))
    first = find_boundaries(graph)[0].name
    values = onnx_runner(add_taps(graph, [first]))({"x": x.numpy()})
    return to_torch(cut_branch(graph, first, ["logits"])), values[first], {"logits": values["logits"]}


def test_float32_rounding_beyond_the_tolerance_passes_against_float64(branch):
    module, feed, reference = branch
    with torch.no_grad():
        got = {"logits": module(torch.from_numpy(feed)).numpy()}
    assert not compare(reference, got, **TIGHT).passed  # float32 cannot hold 1e-9
    report = judge_branch(module, feed, reference, "branch", **TIGHT)
    assert report.passed and "float64" in report.title
    assert 0 < report.outputs["logits"].max_abs < 1e-4


def test_a_wrong_conversion_still_fails_against_float64(branch):
    module, feed, reference = branch
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = convs[len(convs) // 2]
    saved = conv.weight.detach().clone()
    with torch.no_grad():
        conv.weight.mul_(1.001)
    try:
        for tolerance in (TIGHT, {}):
            report = judge_branch(module, feed, reference, "branch", **tolerance)
            assert not report.passed and "float64" in report.title, report.outputs["logits"].describe()
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
