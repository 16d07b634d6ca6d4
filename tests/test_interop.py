"""Teachers from Keras, JAX and scikit-learn amalgamate like a PyTorch one.

The ONNX files come from the framework environments (``make fixtures``, run by
``make test`` before this suite; see mk/frameworks.mk): the Keras and JAX CNNs are
normalised, tapped at their block boundaries and cut into branches that are
converted to trainable torch modules, exactly as a PyTorch CNN exported here;
the scikit-learn forest runs as an output-only teacher.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from amalgam.exporters.metadata import read_metadata
from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_branch
from amalgam.runtime.normalize import normalize
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import add_taps, run_with_taps
from amalgam.runtime.teacher import TaskSpec, Teacher
from tests.builders import PlainCNN, randomize_bn

FIXTURES = Path(__file__).resolve().parent.parent / "runs" / "fixtures"
CNN_FIXTURES = {"keras": "keras_cnn.onnx", "keras-nhwc": "keras_cnn_nhwc.onnx", "jax": "jax_cnn.onnx"}
PARITY = 1e-5
TASKS = [
    {"name": n, "output": "logits", "index": i, "slice": None, "kind": "binary", "labels": None}
    for i, n in enumerate(["tshirt", "trouser", "pullover", "dress", "coat"])
]


def fixture(name):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make fixtures` (make test builds it first)")
    return path


@pytest.fixture(params=["torch", *CNN_FIXTURES])
def cnn_teacher(request, tmp_path):
    """(framework, path) of a 4-block CNN teacher with a 5-logit head."""
    if request.param == "torch":
        path = tmp_path / "torch_cnn.onnx"
        export_torch(
            randomize_bn(PlainCNN()),
            torch.rand(2, 1, 28, 28),
            path,
            input_names=["x"],
            output_names=["logits"],
            opset=18,
            dynamic_batch=True,
            tasks=TASKS,
        )
        return "torch", path
    return request.param, fixture(CNN_FIXTURES[request.param])


def _images(path, n=3):
    """Images in the layout the teacher's input declares (NCHW or NHWC)."""
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(0).random((n, *dims), dtype=np.float32)


def test_framework_teachers_are_stamped(cnn_teacher):
    framework, path = cnn_teacher
    meta = read_metadata(path)
    assert meta["framework"] == framework.split("-")[0]
    assert meta["tasks"] == TASKS
    if framework != "torch":
        assert meta["layout"] == ("NHWC" if framework.endswith("nhwc") else "NCHW")


def test_cnn_teacher_taps_and_branches_match_onnx_runtime(cnn_teacher):
    """Boundaries found, taps returned, every branch as torch equals ONNX Runtime within 1e-5."""
    framework, path = cnn_teacher
    x = _images(path)
    model = normalize(onnx.load(path), list(x.shape))
    boundaries = find_boundaries(model)
    assert len(boundaries) >= 3, f"{framework}: boundaries {boundaries}"
    names = [b.name for b in boundaries]
    reference = make_session(path, opt_level="basic").run(["logits"], {"x": x})[0]
    taps = run_with_taps(make_session(add_taps(model, names), opt_level="basic"), {"x": x}, names + ["logits"])
    np.testing.assert_allclose(taps["logits"], reference, atol=PARITY)
    for b in boundaries:
        assert list(taps[b.name].shape[1:]) == list(b.shape[1:])
        branch = to_torch(cut_branch(model, b.name, ["logits"])).eval()
        with torch.no_grad():
            out = branch(torch.from_numpy(taps[b.name]))
        np.testing.assert_allclose(
            out.numpy(), taps["logits"], atol=PARITY, err_msg=f"{framework} branch after {b.name}"
        )


def test_cnn_teacher_branch_trains(cnn_teacher):
    """The branch after the first boundary has parameters that take gradients and a step."""
    framework, path = cnn_teacher
    x = _images(path)
    model = normalize(onnx.load(path), list(x.shape))
    first = find_boundaries(model)[0].name
    feature = run_with_taps(make_session(add_taps(model, [first])), {"x": x}, [first])[first]
    branch = to_torch(cut_branch(model, first, ["logits"])).train()
    params = [p for p in branch.parameters() if p.requires_grad]
    assert params, f"{framework}: the branch has no trainable parameters"
    before = [p.detach().clone() for p in params]
    loss = branch(torch.from_numpy(feature)).pow(2).mean()
    loss.backward()
    torch.optim.SGD(params, lr=0.1).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params))


def test_cnn_teacher_runs_as_teacher(cnn_teacher):
    """Tasks from the metadata, taps at the boundaries: Teacher.run gives both."""
    framework, path = cnn_teacher
    meta = read_metadata(path)
    tasks = [TaskSpec.from_dict(t) for t in meta["tasks"]]
    x = _images(path)
    boundaries = [b.name for b in find_boundaries(normalize(onnx.load(path), list(x.shape)))]
    teacher = Teacher(path, tasks, boundaries=boundaries)
    out = teacher.run(x)
    logits = make_session(path, opt_level="basic").run(["logits"], {"x": x})[0]
    for i, task in enumerate(tasks):
        np.testing.assert_allclose(out.tasks[task.name], logits[:, i], atol=PARITY)
    assert set(out.taps) == set(boundaries)


def test_sklearn_forest_is_an_output_only_teacher():
    path = fixture("sklearn_forest.onnx")
    meta = read_metadata(path)
    assert meta["framework"] == "sklearn" and meta["output_only"] is True
    assert find_boundaries(onnx.load(path)) == []
    (task,) = [TaskSpec.from_dict(t) for t in meta["tasks"]]
    assert task.kind == "multiclass" and list(task.labels) == ["0", "1", "2"]
    x = np.random.default_rng(1).random((6, 1, 28, 28), dtype=np.float32)
    out = Teacher(path, [task]).run(x)
    proba = make_session(path, opt_level="basic").run(["probabilities"], {"x": x})[0]
    logits = out.tasks[task.name]
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft, proba / proba.sum(axis=1, keepdims=True), atol=1e-5)
    assert out.taps == {}
