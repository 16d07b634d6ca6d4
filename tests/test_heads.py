import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from amalgam.runtime.errors import BadInputError
from amalgam.runtime.heads import prune_outputs
from amalgam.runtime.session import make_session
from tests.builders import PlainCNN, export


def _run(model, x):
    sess = make_session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))


@pytest.mark.parametrize("opset,dynamo", [(17, False), (18, True)])
def test_gemm_head_loses_dropped_rows(tmp_path, opset, dynamo):
    proto = onnx.load(export(PlainCNN(), tmp_path / "t.onnx", opset=opset, dynamo=dynamo))
    x = np.random.randn(3, 1, 28, 28).astype(np.float32)
    full = _run(proto, x)["logits"]
    pruned = prune_outputs(proto, {"logits": [0, 2, 4]})
    out = _run(pruned, x)["logits"]
    np.testing.assert_allclose(out, full[:, [0, 2, 4]], atol=1e-6)
    weights = sum(numpy_helper.to_array(t).size for t in pruned.graph.initializer)
    before = sum(numpy_helper.to_array(t).size for t in proto.graph.initializer)
    assert before - weights == 2 * 64 + 2  # two rows of the 64-wide head and their biases
    assert not any(n.op_type == "Gather" for n in pruned.graph.node)


def _sigmoid_head_model():
    """An output that is not a Gemm: pruning falls back to a Gather."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_non_gemm_output_gathers_kept_logits():
    x = np.random.randn(2, 4).astype(np.float32)
    pruned = prune_outputs(_sigmoid_head_model(), {"y": [3, 1]})
    out = _run(pruned, x)["y"]
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x[:, [3, 1]])), atol=1e-6)


def test_unknown_output_is_named():
    with pytest.raises(BadInputError, match="'z'"):
        prune_outputs(_sigmoid_head_model(), {"z": [0]})
