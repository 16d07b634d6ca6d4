"""runtime.session.make_session: sources, optimisation levels, devices, threads."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from amalgam.runtime.errors import ModelFileError
from amalgam.runtime.session import SessionError, make_session


def _relu_affine():
    """y = relu(x @ W + b) with a dynamic batch axis: a real graph, not a stub."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, lambda x: np.maximum(x @ w + b, 0)


@pytest.fixture
def affine(tmp_path):
    model, ref = _relu_affine()
    path = tmp_path / "affine.onnx"
    onnx.save(model, path)
    return model, path, ref


@pytest.mark.parametrize("source", ["path", "str", "bytes", "proto"])
def test_cpu_session_from_every_source(affine, source):
    model, path, ref = affine
    given = {"path": path, "str": str(path), "bytes": path.read_bytes(), "proto": model}[source]
    sess = make_session(given)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    x = np.random.randn(5, 4).astype(np.float32)
    np.testing.assert_allclose(sess.run(["y"], {"x": x})[0], ref(x), atol=1e-6)


@pytest.mark.parametrize(
    "level,expected",
    [
        ("full", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("none", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
    ],
)
def test_opt_levels_reach_the_session(affine, level, expected):
    model, _, ref = affine
    sess = make_session(model, opt_level=level)
    assert sess.get_session_options().graph_optimization_level == expected
    x = np.random.randn(2, 4).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref(x), atol=1e-6)


def test_unknown_opt_level_is_refused(affine):
    with pytest.raises(SessionError, match="'fastest'"):
        make_session(affine[0], opt_level="fastest")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has CUDA: the no-fallback case cannot arise",
)
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_cpu_only_runtime_raises_instead_of_falling_back(affine, device):
    with pytest.raises(SessionError) as e:
        make_session(affine[0], device=device)
    assert device in str(e.value) and "CPUExecutionProvider" in str(e.value)


def test_unknown_device_is_refused(affine):
    with pytest.raises(SessionError, match="'tpu'"):
        make_session(affine[0], device="tpu")


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_option_is_honoured(affine, threads):
    sess = make_session(affine[0], threads=threads)
    opts = sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (threads, 1)


def test_default_threads_left_to_onnxruntime(affine):
    assert make_session(affine[0]).get_session_options().intra_op_num_threads == 0


def test_spinning_off_is_written_to_the_config(affine):
    opts = make_session(affine[0], spinning=False).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all\n" * 10, b"\x08\x07\x12\x03abc"])
def test_non_onnx_file_names_the_file(tmp_path, content):
    path = tmp_path / "notes.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        make_session(path)
    assert str(path) in str(e.value)
    assert e.value.exit_code == 2


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ModelFileError, match="absent.onnx"):
        make_session(path)


def test_each_process_of_a_job_gets_its_gpu_and_its_share_of_the_cores():
    from amalgam.runtime.session import device_for_rank, teacher_device, threads_for_rank

    assert device_for_rank("cuda", 3) == "cuda:3" and device_for_rank("cuda:0", 3) == "cuda:0"
    assert device_for_rank("cpu", 3) == "cpu"
    assert threads_for_rank(1) == os.cpu_count() and threads_for_rank(10 * os.cpu_count()) == 1
    assert teacher_device("cpu", 1) == "cpu"
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # this CPU-only onnxruntime
        assert teacher_device("cuda", 1) == "cpu"


def test_a_rank_asking_for_its_gpu_on_a_cpu_only_runtime_is_refused(affine):
    from amalgam.runtime.session import device_for_rank

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP")
    with pytest.raises(SessionError, match="cuda:1"):
        make_session(affine, device=device_for_rank("cuda", 1))
