"""The comparator's default tolerance on a real 25M-parameter network (torchvision
ResNet-50, random weights, 64x64 inputs): a correct float32 export and conversion pass,
a wrong one (one weight moved, one BatchNorm epsilon changed) fails."""

import copy

import numpy as np
import onnx
import pytest
import torch
import torchvision

from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_branch
from amalgam.runtime.normalize import normalize
from amalgam.runtime.parity import ATOL, RTOL, compare, onnx_runner
from amalgam.runtime.taps import add_taps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    torch.manual_seed(0)
    module = torchvision.models.resnet50(weights=None).eval()
    assert sum(p.numel() for p in module.parameters()) > 25e6
    x = torch.rand(2, 3, 64, 64)
    path = export_torch(
        module, x, tmp_path_factory.mktemp("r50") / "r50.onnx", input_names=["x"], output_names=["logits"]
    )  # its own check: compare() at the defaults, two batch sizes
    with torch.no_grad():
        logits = module(x).numpy()
    return module, x, onnx.load(str(path)), onnx_runner(path)({"x": x.numpy()})["logits"], logits


def test_a_correct_conversion_passes_the_defaults(resnet50):
    _, x, model, ort_logits, torch_logits = resnet50
    assert np.abs(ort_logits).max() > 5  # logits of a real magnitude, where rtol matters
    assert compare({"logits": torch_logits}, {"logits": ort_logits}).passed
    graph = normalize(model)
    first = find_boundaries(graph)[0].name
    values = onnx_runner(add_taps(graph, [first]))({"x": x.numpy()})
    with torch.no_grad():
        branch = to_torch(cut_branch(graph, first, ["logits"]))(torch.from_numpy(values[first])).numpy()
    report = compare({"logits": values["logits"]}, {"logits": branch})
    assert report.passed and report.outputs["logits"].max_abs < ATOL


def _wrong(module, change):
    wrong = copy.deepcopy(module)
    convs = [m for m in wrong.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in wrong.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        if change == "one weight":
            convs[-1].weight.view(-1)[0] += 0.1
        else:
            norms[len(norms) // 2].eps = 1e-3  # was 1e-5
    return wrong


@pytest.mark.parametrize("change", ["one weight", "BatchNorm eps"])
def test_a_wrong_conversion_fails_the_defaults(resnet50, change):
    module, x, _, ort_logits, _ = resnet50
    with torch.no_grad():
        wrong = _wrong(module, change)(x).numpy()
    report = compare({"logits": ort_logits}, {"logits": wrong})
    assert not report.passed
    assert (report.outputs["logits"].atol, report.outputs["logits"].rtol) == (ATOL, RTOL)
