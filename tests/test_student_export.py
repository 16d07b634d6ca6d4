"""The deployable student: simplify, int8 quantize, metadata, on a briefly trained CNN."""

import os

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from amalgam.exporters.metadata import read_metadata
from amalgam.exporters.student import INT8_FLAGS, cpu_int8_support, quantize_int8, save_atomic, simplify, stamp_student
from amalgam.runtime.errors import BadInputError, ConfigError, ModelFileError
from amalgam.runtime.parity import compare, onnx_runner
from amalgam.toolkit.eval.metrics import agreement
from tests.builders import PlainCNN, export, randomize_bn

TASKS = [{"name": f"quadrant{i}", "output": "logits", "index": i, "kind": "binary"} for i in range(4)] + [
    {"name": "bright", "output": "logits", "index": 4, "kind": "binary", "labels": ["dark", "bright"]}
]
PREPROCESS = {"size": [28, 28], "channels": 1, "range": [0, 1], "mean": [0.0], "std": [1.0]}
TEACHERS = {"teacher_a": "a" * 64, "teacher_b": "b" * 64}


def smooth_images(n, seed):
    """Random smooth images in [0, 1]: 7x7 noise upsampled to 28x28 (structured, not pure noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 7, 7, generator=g)
    return F.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)


def attributes(x):
    """Five binary attributes: each quadrant brighter than 0.5, and the whole image."""
    h = x.shape[-1] // 2
    parts = [x[..., :h, :h], x[..., :h, h:], x[..., h:, :h], x[..., h:, h:], x]
    return torch.stack([p.mean(dim=(1, 2, 3)) for p in parts], 1).gt(0.5).float()


def train_briefly(model, x, epochs=3, batch=64):
    """A few epochs of multi-label BCE; cumulative BatchNorm statistics, so eval mode matches."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    y = attributes(x)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loss = F.binary_cross_entropy_with_logits(model(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A stamped fp32 student file (PlainCNN 32-64-128-256, 5 logits) and held-out images."""
    torch.manual_seed(0)
    model = train_briefly(PlainCNN(channels=(32, 64, 128, 256)), smooth_images(384, seed=0))
    path = export(model, tmp_path_factory.mktemp("student") / "student.onnx", opset=18, dynamo=True)
    stamped = stamp_student(
        onnx.load(str(path)), TASKS, thresholds={"bright": 0.0}, preprocess=PREPROCESS, teacher_hashes=TEACHERS
    )
    onnx.save(stamped, str(path))
    held_out = smooth_images(256, seed=1)
    with torch.no_grad():
        accuracy = (model(held_out).gt(0).float() == attributes(held_out)).float().mean().item()
    return path, held_out.numpy(), accuracy


@pytest.fixture(scope="module")
def simplified(student, tmp_path_factory):
    return simplify(student[0], tmp_path_factory.mktemp("simplified") / "student.sim.onnx")


@pytest.fixture(scope="module")
def int8(simplified, tmp_path_factory):
    calibration = (smooth_images(32, seed=100 + i).numpy() for i in range(8))
    return quantize_int8(simplified, tmp_path_factory.mktemp("int8") / "student.int8.onnx", calibration)


def batch_dim(path):
    model = onnx.load(str(path))
    return [vi.type.tensor_type.shape.dim[0] for vi in (model.graph.input[0], model.graph.output[0])]


def test_the_student_learned_something(student):
    assert student[2] > 0.75


@pytest.fixture(scope="module")
def unfolded(tmp_path_factory):
    """An fp32 student exported without constant folding (BatchNormalization nodes
    left in) and its simplified copy: onnxsim has real work to do."""
    torch.manual_seed(0)
    model = randomize_bn(PlainCNN(channels=(16, 32, 64, 128)))
    folder = tmp_path_factory.mktemp("unfolded")
    path = folder / "student.onnx"
    torch.onnx.export(
        model,
        (torch.rand(2, 1, 28, 28),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["logits"],
        do_constant_folding=False,
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path, simplify(path, folder / "student.sim.onnx")


def test_simplify_folds_batchnorm(unfolded):
    ops = [[n.op_type for n in onnx.load(str(p)).graph.node] for p in unfolded]
    assert ops[0].count("BatchNormalization") == 4 and "BatchNormalization" not in ops[1]


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("which", ["student", "unfolded"])
def test_simplified_equals_original_at_any_batch(request, which, n):
    if which == "student":
        original, simple = request.getfixturevalue("student")[0], request.getfixturevalue("simplified")
    else:
        original, simple = request.getfixturevalue("unfolded")
    x = smooth_images(n, seed=10 + n).numpy()
    # the original runs unoptimised, so ONNX Runtime's own fusions cannot mask a difference
    report = compare(onnx_runner(original, opt_level="none")(x), onnx_runner(simple)(x), atol=1e-5, rtol=0)
    assert report.passed, report.to_markdown()
    assert report.outputs["logits"].shape == (n, 5) and report.outputs["logits"].max_abs < 1e-5


def test_simplify_keeps_the_batch_axis_dynamic(simplified):
    assert all(d.dim_param and not d.dim_value for d in batch_dim(simplified))


def test_static_batch_fixes_the_batch_axis(student, tmp_path):
    fixed = simplify(onnx.load(str(student[0])), tmp_path / "b1.onnx", static_batch=1)
    assert [d.dim_value for d in batch_dim(fixed)] == [1, 1]
    x = student[1][:1]
    assert compare(onnx_runner(student[0])(x), onnx_runner(fixed)(x), atol=1e-5, rtol=0).passed
    assert read_metadata(fixed)["simplified"]["static_batch"] == 1
    with pytest.raises(BadInputError, match="static batch"):
        simplify(student[0], tmp_path / "b0.onnx", static_batch=0)
    assert not (tmp_path / "b0.onnx").exists()


def test_metadata_survives_simplify_and_quantize(simplified, int8):
    for path, precision in ((simplified, "fp32"), (int8, "int8")):
        meta = read_metadata(path)
        assert [t["name"] for t in meta["tasks"]] == [t["name"] for t in TASKS]
        assert meta["tasks"][4]["labels"] == ["dark", "bright"] and meta["tasks"][0]["kind"] == "binary"
        assert meta["thresholds"] == {"bright": 0.0}
        assert meta["preprocess"] == PREPROCESS and meta["teachers"] == TEACHERS
        assert meta["role"] == "student" and meta["precision"] == precision
        assert meta["toolkit_version"] and meta["framework"] == "torch"
        assert not [p.key for p in onnx.load(str(path)).metadata_props if p.key.startswith("onnxsim.")]
    assert read_metadata(int8)["quantization"]["format"] == "QDQ"
    assert read_metadata(int8)["quantization"]["calibration_batches"] == 8


def test_int8_is_static_qdq_and_keeps_dynamic_batch(int8):
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    assert all(d.dim_param for d in batch_dim(int8))


def test_int8_is_3x_smaller_and_agrees_with_fp32(simplified, int8, student):
    assert os.path.getsize(simplified) >= 3 * os.path.getsize(int8)
    x = student[1]
    fp32, q = onnx_runner(simplified)(x)["logits"], onnx_runner(int8)(x)["logits"]
    decided = fp32 > 0
    assert 0.1 < decided.mean() < 0.9  # decisions vary with the input, so agreement means something
    assert agreement("binary", fp32, q) >= 0.9
    for n in (1, 64):
        assert onnx_runner(int8)(student[1][:n])["logits"].shape == (n, 5)


def test_int8_needs_calibration_data(simplified, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(BadInputError, match="--calib-data"):
        quantize_int8(simplified, out, None)
    with pytest.raises(BadInputError, match="empty"):
        quantize_int8(simplified, out, [])
    with pytest.raises(BadInputError, match="'x'"):
        quantize_int8(simplified, out, [{"image": np.zeros((2, 1, 28, 28), np.float32)}])
    assert list(tmp_path.iterdir()) == []


def test_bad_files_and_failed_writes_leave_nothing(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="broken.onnx"):
        simplify(broken, tmp_path / "out.onnx")
    target = tmp_path / "kept.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(Exception):  # noqa: B017 (whatever onnx raises, the target is kept)
        save_atomic("not a ModelProto", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx", "kept.onnx"]
    assert target.read_bytes() == b"previous"


def test_stamp_student_rejects_bad_tasks(student):
    model = onnx.load(str(student[0]))
    with pytest.raises(BadInputError, match="'nope'"):
        stamp_student(model, TASKS, thresholds={"nope": 0.0})
    with pytest.raises(BadInputError, match="'probs'"):
        stamp_student(model, [{"name": "a", "output": "probs", "index": 0}])
    with pytest.raises(ConfigError, match="regression"):
        stamp_student(model, [{"name": "a", "output": "logits", "kind": "regression"}])


def test_cpu_int8_support_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile amx_int8\n")
    assert cpu_int8_support(info) == ["avx512_vnni", "amx_int8"]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_int8_support(info) == []
    assert cpu_int8_support(tmp_path / "missing") == []
    assert set(cpu_int8_support()) <= set(INT8_FLAGS)
