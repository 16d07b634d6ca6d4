"""Teacher and TaskSpec against real exported CNNs and their torch originals."""

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amalgam.runtime.errors import BadInputError, ConfigError, UnknownTapError
from amalgam.runtime.model_io import file_sha256
from amalgam.runtime.teacher import TaskSpec, Teacher
from tests.builders import SECNN, PlainCNN, export, randomize_bn


@pytest.fixture(scope="module", params=[(17, False), (18, True)], ids=["legacy17", "dynamo18"])
def plain(request, tmp_path_factory):
    opset, dynamo = request.param
    model = randomize_bn(PlainCNN(n_out=5))
    path = export(model, tmp_path_factory.mktemp("t") / "plain.onnx", opset=opset, dynamo=dynamo)
    return model, path


def _relus(path):
    return [n.output[0] for n in onnx.load(path).graph.node if n.op_type == "Relu"]


def _torch_run(model, x):
    feats = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: feats.append(o.detach().numpy()))
        for m in model.features
        if isinstance(m, torch.nn.ReLU)
    ]
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    return y, feats


def test_task_logits_and_taps_equal_torch(plain):
    model, path = plain
    relus = _relus(path)
    tasks = [
        TaskSpec("smiling", "logits", index=2),
        TaskSpec("hair", "logits", slice=(1, 4), kind="multiclass", labels=["black", "blond", "brown"]),
        TaskSpec("all", "logits", kind="multiclass"),
    ]
    teacher = Teacher(path, tasks, boundaries=[relus[1], relus[3]])
    x = np.random.rand(6, 1, 28, 28).astype(np.float32)
    y, feats = _torch_run(model, x)
    out = teacher.run(x)
    assert out.tasks["smiling"].shape == (6,) and out.tasks["hair"].shape == (6, 3)
    np.testing.assert_allclose(out.tasks["smiling"], y[:, 2], atol=1e-5)
    np.testing.assert_allclose(out.tasks["hair"], y[:, 1:4], atol=1e-5)
    np.testing.assert_allclose(out.tasks["all"], y, atol=1e-5)
    assert list(out.taps) == [relus[1], relus[3]]
    np.testing.assert_allclose(out.taps[relus[1]], feats[1], atol=1e-5)
    np.testing.assert_allclose(out.taps[relus[3]], feats[3], atol=1e-5)
    tasks_again, taps_again = teacher.run(x[:1])  # unpacks as (task_logits, taps)
    np.testing.assert_allclose(tasks_again["smiling"], y[:1, 2], atol=1e-5)


def test_identity_and_input(plain):
    _, path = plain
    teacher = Teacher(path, [TaskSpec("a", "logits", index=0)])
    assert teacher.sha256 == file_sha256(path)  # the file and its external data (test_model_io)
    assert (teacher.input_name, teacher.input_shape[1:]) == ("x", [1, 28, 28])
    assert teacher.input_shape[0] is None  # dynamic batch
    assert teacher.path == path and [t.name for t in teacher.tasks] == ["a"]
    assert teacher.boundaries == [] and teacher.run(np.zeros((2, 1, 28, 28), np.float32)).taps == {}


def test_session_is_optimised_fully(plain):
    import onnxruntime as ort

    teacher = Teacher(plain[1], [{"name": "a", "output": "logits", "index": 0}], threads=1)
    opts = teacher.session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == 1


def test_single_logit_binary_needs_no_index(tmp_path):
    model = randomize_bn(SECNN(n_out=1))
    path = export(model, tmp_path / "one.onnx", opset=17, dynamo=False)
    x = np.random.rand(3, 1, 28, 28).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    out = Teacher(path, [TaskSpec("cat", "logits")]).run(x)
    assert out.tasks["cat"].shape == (3,)
    np.testing.assert_allclose(out.tasks["cat"], y[:, 0], atol=1e-5)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        (dict(index=5), "index 5 is out of range"),
        (dict(slice=(3, 7), kind="multiclass"), "slice [3, 7] is out of range"),
        (dict(), "needs 'index' unless the output is 1 wide"),
        (dict(kind="multiclass", labels=["a", "b"]), "2 labels for 5 logits"),
    ],
)
def test_task_that_does_not_fit_the_output_names_file_task_and_width(plain, spec, fragment):
    path = plain[1]
    with pytest.raises(ConfigError) as e:
        Teacher(path, [TaskSpec("smiling", "logits", **spec)])
    msg = str(e.value)
    assert str(path) in msg and "'smiling'" in msg and "width 5" in msg and fragment in msg


def test_unknown_output_lists_outputs(plain):
    with pytest.raises(ConfigError, match=r"'logit'.*outputs are \['logits'\]"):
        Teacher(plain[1], [TaskSpec("a", "logit", index=0)])


def test_duplicate_task_names(plain):
    with pytest.raises(ConfigError, match=r"\['a'\] are declared more than once"):
        Teacher(plain[1], [TaskSpec("a", "logits", index=0), TaskSpec("a", "logits", index=1)])


def test_unknown_boundary_names_the_teacher(plain):
    path = plain[1]
    relu = _relus(path)[0]
    with pytest.raises(UnknownTapError) as e:
        Teacher(path, [TaskSpec("a", "logits", index=0)], boundaries=[relu + "x"])
    assert str(path) in str(e.value) and relu in str(e.value)


def test_unknown_input_name(plain):
    with pytest.raises(ConfigError, match=r"no graph input 'image'; inputs are \['x'\]"):
        Teacher(plain[1], [TaskSpec("a", "logits", index=0)], input_name="image")


def test_nan_output_names_teacher_and_output(plain):
    path = plain[1]
    teacher = Teacher(path, [TaskSpec("a", "logits", index=0)])
    x = np.random.rand(2, 1, 28, 28).astype(np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(BadInputError) as e:
        teacher.run(x)
    assert str(path) in str(e.value) and "'logits'" in str(e.value) and "NaN" in str(e.value)


def test_wrong_batch_shape(plain):
    teacher = Teacher(plain[1], [TaskSpec("a", "logits", index=0)])
    with pytest.raises(BadInputError, match=r"expects shape \['N', 1, 28, 28\], got \[2, 3, 28, 28\]"):
        teacher.run(np.zeros((2, 3, 28, 28), np.float32))


def test_float64_batch_is_cast(plain):
    teacher = Teacher(plain[1], [TaskSpec("a", "logits", index=0)])
    x = np.random.rand(2, 1, 28, 28)
    np.testing.assert_allclose(teacher.run(x).tasks["a"], teacher.run(x.astype(np.float32)).tasks["a"])


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(kind="regression"), "kind: expected one of ['binary', 'multiclass'], found 'regression'"),
        (dict(slice=(0, 2)), "slice: a binary task takes one logit (index), found slice [0, 2]"),
        (dict(kind="multiclass", index=1), "index: a multiclass task takes a slice [start, stop], found index 1"),
        (dict(kind="multiclass", slice=(2, 3)), "at least two class logits), found [2, 3]"),
        (dict(kind="multiclass", slice=(3, 1)), "slice (3, 1)"),
        (dict(index=-1), "index -1"),
        (dict(index=True), "index True"),
        (dict(labels=["cat"]), "labels: a binary task has 2 label names [negative, positive], found 1"),
        (
            dict(kind="multiclass", slice=(0, 3), labels=["a", "b"]),
            "labels: expected 3 names (one per class in the slice), found 2",
        ),
        (dict(labels="ab"), "list of strings"),
    ],
)
def test_taskspec_validation_names_the_task(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        TaskSpec("hair", "logits", **kwargs)
    assert "'hair'" in str(e.value) and fragment in str(e.value)


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ConfigError, match=r"task 'a': unknown keys \['idx'\]"):
        TaskSpec.from_dict({"name": "a", "output": "y", "idx": 1})
    with pytest.raises(ConfigError, match=r"task 'a': missing \['output'\]"):
        TaskSpec.from_dict({"name": "a"})


_specs = st.one_of(
    st.builds(lambda n, i: TaskSpec(n, "y", index=i), st.text(min_size=1), st.none() | st.integers(0, 99)),
    st.builds(
        lambda n, s, k: TaskSpec(n, "y", slice=(s, s + k), kind="multiclass", labels=[f"c{j}" for j in range(k)]),
        st.text(min_size=1),
        st.integers(0, 50),
        st.integers(2, 9),
    ),
    st.builds(lambda n: TaskSpec(n, "out", kind="multiclass"), st.text(min_size=1)),
)


@given(_specs)
def test_to_dict_from_dict_round_trip(spec):
    d = spec.to_dict()
    assert set(d) == {"name", "output", "index", "slice", "kind", "labels"}
    assert TaskSpec.from_dict(d) == spec


def test_unreadable_teacher_file_is_named(tmp_path):
    from amalgam.runtime.errors import ModelFileError

    path = tmp_path / "teacher.onnx"
    path.write_bytes(b"definitely not protobuf" * 4)
    with pytest.raises(ModelFileError, match="teacher.onnx"):
        Teacher(path, [TaskSpec("a", "logits", index=0)])
    with pytest.raises(ModelFileError, match="absent.onnx"):
        Teacher(tmp_path / "absent.onnx", [TaskSpec("a", "logits", index=0)])


def test_cuda_teacher_on_cpu_only_runtime_is_refused(plain):
    import onnxruntime as ort

    from amalgam.runtime.session import SessionError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(SessionError, match="'cuda'"):
        Teacher(plain[1], [TaskSpec("a", "logits", index=0)], device="cuda")


def test_open_teacher_in_one_call(plain):
    """open_teacher: normalised graph, boundaries found (or checked), convertible layers,
    a runner with the boundaries as taps; a failure names its part."""
    from amalgam.runtime.errors import BoundaryError
    from amalgam.runtime.teacher import open_teacher

    model, path = plain
    opened = open_teacher(path, [TaskSpec("a", "logits", index=0)], (1, 1, 28, 28), copied="all")
    assert len(opened.boundaries) >= 3 and opened.runner.boundaries == [b.name for b in opened.boundaries]
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    logits, taps = opened.runner.run(x)
    with torch.no_grad():
        assert np.abs(logits["a"] - model.eval()(torch.from_numpy(x))[:, 0].numpy()).max() < 1e-4
    assert set(taps) == {b.name for b in opened.boundaries}
    given = opened.boundaries[1].name
    assert [
        b.name for b in open_teacher(path, [TaskSpec("a", "logits", index=0)], (1, 1, 28, 28), [given]).boundaries
    ] == [given]
    with pytest.raises(UnknownTapError) as bad_boundary:
        open_teacher(path, [TaskSpec("a", "logits", index=0)], (1, 1, 28, 28), ["nope"])
    assert bad_boundary.value.part == "boundaries"
    with pytest.raises(BadInputError) as bad_input:
        open_teacher(path, [TaskSpec("a", "logits", index=0)], (1, 3, 28, 28))
    assert bad_input.value.part == "input" and not isinstance(bad_input.value, BoundaryError)
