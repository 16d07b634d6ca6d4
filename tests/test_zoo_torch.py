"""The torchvision zoo as teachers: exported by ``amalgam export-teacher torch`` at its
defaults, then ``amalgam inspect --check`` cuts and converts the branch after every
candidate block boundary and compares it with ONNX Runtime.

Random weights, 32x32 inputs, the smallest each graph takes (ViT-B/16 and a DeiT-Ti-sized
ViT built for 32x32: four patches and the class token; Swin-T pads its 8x8 patch grid to
its 7x7 windows). Most come through ``tests.zoo_teachers:calibrated`` (BatchNorm statistics set
from standard-normal images, ViT's zero head made random, so that logits have a real
magnitude and parity means something); ConvNeXt and Swin-T straight from ``torchvision.models``.
Each model is exported once per module, into a temporary folder.
"""

import contextlib
import io
import json
import time

import numpy as np
import onnx
import pytest

from amalgam.runtime.parity import onnx_runner
from amalgam.toolkit.cli import main
from tests.frameworks.cli import amalgam

pytestmark = pytest.mark.slow

CALIBRATED = "tests.zoo_teachers:calibrated"
ZOO = {  # name: (factory, --kwargs)
    "resnet18": (CALIBRATED, {"arch": "resnet18"}),
    "mobilenet_v3_small": (CALIBRATED, {"arch": "mobilenet_v3_small"}),
    "efficientnet_b0": (CALIBRATED, {"arch": "efficientnet_b0"}),
    "densenet121": (CALIBRATED, {"arch": "densenet121"}),
    "regnet_y_400mf": (CALIBRATED, {"arch": "regnet_y_400mf"}),
    "convnext_tiny": ("torchvision.models:convnext_tiny", {}),  # LayerNorm only
    "vit_b_16": (CALIBRATED, {"arch": "vit_b_16", "image_size": 32}),  # its head starts at zero
    "deit_tiny": ("tests.zoo_teachers:deit_tiny", {"image_size": 32}),  # patch 16, dim 192, 12 layers, 3 heads
    "swin_t": ("torchvision.models:swin_t", {}),  # LayerNorm only; its stages are NHWC maps
}
SIZE = 32
TOKEN_MODELS = {"vit_b_16": 12, "deit_tiny": 12}  # a ViT's boundaries are token sequences, one per encoder layer
AT_LEAST = {"swin_t": 4}  # boundaries expected: Swin-T's four stages (NHWC maps); others at least 2
NOISE = ("Traceback", "Warning", "[E:onnxruntime", "torch.fx", "def forward")


def _export(factory, kwargs, path):
    """``amalgam export-teacher torch FACTORY`` in-process: (exit code, stdout, stderr)."""
    args = ["export-teacher", "torch", factory, "--input-shape", f"1,3,{SIZE},{SIZE}", "-o", str(path)] + (
        ["--kwargs", json.dumps(kwargs)] if kwargs else []
    )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", params=list(ZOO))
def exported(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp("zoo") / f"{name}.onnx"
    start = time.perf_counter()
    code, out, err = _export(*ZOO[name], path)
    print(f"\n{name}: export-teacher {time.perf_counter() - start:.1f}s")
    assert code == 0, err
    assert err == "" and out.strip() == f"wrote {path}"
    return name, path


def test_export_keeps_the_batch_open_and_logits_are_real(exported):
    _, path = exported
    model = onnx.load(str(path), load_external_data=False)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, SIZE, SIZE]
    logits = onnx_runner(path)({"x": np.random.randn(3, 3, SIZE, SIZE).astype(np.float32)})["logits"]
    assert logits.shape == (3, 1000) and np.abs(logits).max() > 0.01  # not the 1e-20 of mean-0 var-1 statistics


def test_inspect_check_converts_every_boundary_with_parity(exported, capsys):
    name, path = exported
    start = time.perf_counter()
    code, captured = amalgam(capsys, "inspect", path, "--check", "--json")
    seconds = time.perf_counter() - start
    assert code == 0, captured.err
    assert not any(n in captured.err for n in NOISE), captured.err
    blocks = json.loads(captured.out)["blocks"]
    with capsys.disabled():
        print(
            f"\n{name}: inspect --check {seconds:.1f}s, {len(blocks)} boundaries, worst max abs "
            f"{max([b['branch_max_abs_diff'] for b in blocks], default=0):.2g}"
        )
    if name in TOKEN_MODELS:  # 32x32 through 16x16 patches: a 2x2 grid and the class token
        assert len(blocks) == TOKEN_MODELS[name], blocks
        assert all((b["kind"], b["grid"], b["stride"], b["extra_tokens"]) == ("tokens", [2, 2], 16, 1) for b in blocks)
    assert len(blocks) >= AT_LEAST.get(name, 2), blocks
    assert all(b["branch_ok"] for b in blocks), [(b["name"], b["branch_max_abs_diff"]) for b in blocks]


def test_token_models_convert_whole(exported):
    """A ViT's whole graph converts too and matches ONNX Runtime (its student has no token trunk yet)."""
    import torch

    from amalgam.runtime.convert import to_torch
    from amalgam.runtime.normalize import normalize
    from amalgam.runtime.parity import compare

    name, path = exported
    if name not in TOKEN_MODELS:
        pytest.skip("a CNN: its branches are checked by inspect --check")
    graph = normalize(onnx.load(str(path)))
    x = np.random.rand(2, 3, SIZE, SIZE).astype(np.float32)
    with torch.no_grad():
        got = to_torch(graph)(torch.from_numpy(x)).numpy()
    compare(onnx_runner(graph)({"x": x}), {"logits": got}, title=f"{name} converted whole").raise_if_failed()
