"""Exact folds on small built ONNX graphs: same outputs after, fewer nodes, and the
cases that must not fold left alone."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from amalgam.exporters.fold import fold_student
from amalgam.runtime.session import make_session

RNG = np.random.default_rng(0)
N, C, H, W = 3, 6, 5, 5


def const(name, array):
    return numpy_helper.from_array(
        np.asarray(array, dtype=np.float32 if np.asarray(array).dtype.kind == "f" else np.int64), name
    )


def weights(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def model(nodes, inits, out_shape=None, x_shape=(None, C, H, W)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(m)


def run(m, x):
    return make_session(m, opt_level="none").run(None, {"x": x})[0]


def folded(m):
    """(outputs before, outputs after, ops after, counts) on one random batch."""
    x = RNG.normal(size=(N, C, H, W)).astype(np.float32)
    before = run(m, x)
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    after_model, counts = fold_student(copy)
    return before, run(after_model, x), [n.op_type for n in after_model.graph.node], counts


def adapter_then_conv(pads, bias=True, between=None):
    inits = [const("wa", weights(C, C, 1, 1)), const("w", weights(4, C, 3, 3)), const("b", weights(4))]
    adapter_inputs = ["x", "wa"]
    if bias:
        inits.append(const("ba", weights(C) + 1.0))
        adapter_inputs.append("ba")
    nodes = [helper.make_node("Conv", adapter_inputs, ["a"], kernel_shape=[1, 1])]
    if between:
        nodes.append(helper.make_node(between, ["a"], ["a2"]))
    nodes.append(
        helper.make_node("Conv", ["a2" if between else "a", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[pads] * 4)
    )
    return model(nodes, inits)


def test_adapter_folds_into_unpadded_conv_as_one_conv():
    before, after, ops, counts = folded(adapter_then_conv(pads=0))
    assert ops == ["Conv"] and counts["linear_conv"] == 1
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_adapter_bias_through_zero_padding_becomes_an_exact_map():
    before, after, ops, counts = folded(adapter_then_conv(pads=1))
    assert ops == ["Conv", "Add"] and counts["linear_conv"] == 1
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_adapter_without_bias_folds_through_padding_as_one_conv():
    before, after, ops, _ = folded(adapter_then_conv(pads=1, bias=False))
    assert ops == ["Conv"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_adapter_followed_by_a_nonlinearity_is_left_alone():
    before, after, ops, counts = folded(adapter_then_conv(pads=1, between="Relu"))
    assert ops == ["Conv", "Relu", "Conv"] and counts["linear_conv"] == 0
    np.testing.assert_array_equal(after, before)


def gated_head(consumer_nodes, inits):
    """x -> squeeze-excitation gate g(x) -> x * g -> ``consumer_nodes`` (reading "gated")."""
    gate = [
        helper.make_node("ReduceMean", ["x", "hw"], ["s"], keepdims=0),
        helper.make_node("Gemm", ["s", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Sigmoid", ["z"], ["sig"]),
        helper.make_node("Mul", ["sig", "two"], ["g2"]),
        helper.make_node("Unsqueeze", ["g2", "hw"], ["g"]),
        helper.make_node("Mul", ["x", "g"], ["gated"]),
    ]
    inits = [
        const("hw", np.array([2, 3])),
        const("w1", weights(C, C)),
        const("b1", weights(C)),
        const("two", np.array(2.0)),
    ] + inits
    return model(gate + consumer_nodes, inits)


def test_gate_moves_past_global_pooling_and_shares_the_gates_pool():
    head = [
        helper.make_node("ReduceMean", ["gated", "hw"], ["p"], keepdims=0),
        helper.make_node("Gemm", ["p", "wh", "bh"], ["y"], transB=1),
    ]
    before, after, ops, counts = folded(gated_head(head, [const("wh", weights(3, C)), const("bh", weights(3))]))
    assert counts["pool_first"] == 1 and counts["duplicates"] == 1
    assert ops == ["ReduceMean", "Gemm", "Sigmoid", "Mul", "Gemm"]  # the gate's x2 went into the head
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_nhwc_branch_adapter_and_pool_fold_into_one_gemm():
    """gate -> 1x1 adapter -> NHWC transpose -> ReduceSum / (H*W) -> Gemm (a JAX teacher's head)."""
    head = [
        helper.make_node("Conv", ["gated", "wa", "ba"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceSum", ["t", "hw_nhwc"], ["r"], keepdims=0),
        helper.make_node("Div", ["r", "area"], ["p"]),
        helper.make_node("Gemm", ["p", "wh", "bh"], ["y"]),
    ]
    inits = [
        const("wa", weights(C, C, 1, 1)),
        const("ba", weights(C)),
        const("hw_nhwc", np.array([1, 2])),
        const("area", np.array(float(H * W))),
        const("wh", weights(C, 2)),
        const("bh", weights(2)),
    ]
    before, after, ops, counts = folded(gated_head(head, inits))
    assert ops == ["ReduceMean", "Gemm", "Sigmoid", "Mul", "Gemm"]  # adapter, 1 / (H * W) and x2 in the head
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_pool_of_a_full_map_product_is_left_alone():
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "hw"], ["y"], keepdims=0),
    ]
    before, after, ops, counts = folded(model(nodes, [const("hw", np.array([2, 3]))]))
    assert ops == ["Mul", "ReduceMean"] and sum(counts.values()) == 0
    np.testing.assert_array_equal(after, before)


def test_gemm_chain_and_column_scale_fold_into_one_gemm():
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Mul", ["h", "c"], ["hc"]),
        helper.make_node("Gemm", ["hc", "w2", "b2"], ["y"]),
    ]
    inits = [
        const("w1", weights(8, C * H * W)),
        const("b1", weights(8)),
        const("c", weights(8)),
        const("w2", weights(8, 3)),
        const("b2", weights(3)),
    ]
    before, after, ops, counts = folded(model(nodes, inits))
    assert ops == ["Flatten", "Gemm"] and counts["gemm_chain"] == 2
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_two_gated_branches_on_one_feature_merge_into_one_chain():
    """Two squeeze-excitation branches on one trunk feature, each a head with named task outputs."""
    nodes, inits = [helper.make_node("ReduceMean", ["x", "hw"], ["s"], keepdims=0)], [const("hw", np.array([2, 3]))]
    for b, width in (("a", 3), ("b", 2)):
        nodes += [
            helper.make_node("Gemm", ["s", f"w1{b}", f"b1{b}"], [f"z{b}"], transB=1),
            helper.make_node("Relu", [f"z{b}"], [f"r{b}"]),
            helper.make_node("Gemm", [f"r{b}", f"w2{b}", f"b2{b}"], [f"e{b}"], transB=1),
            helper.make_node("Sigmoid", [f"e{b}"], [f"g{b}"]),
            helper.make_node("Unsqueeze", [f"g{b}", "hw"], [f"g4{b}"]),
            helper.make_node("Mul", ["x", f"g4{b}"], [f"gated{b}"]),
            helper.make_node("ReduceMean", [f"gated{b}", "hw"], [f"p{b}"], keepdims=0),
            helper.make_node("Gemm", [f"p{b}", f"wh{b}", f"bh{b}"], [f"h{b}"], transB=1),
        ]
        inits += [
            const(f"w1{b}", weights(2, C)),
            const(f"b1{b}", weights(2)),
            const(f"w2{b}", weights(C, 2)),
            const(f"b2{b}", weights(C)),
            const(f"wh{b}", weights(width, C)),
            const(f"bh{b}", weights(width)),
        ]
    nodes += [helper.make_node("Concat", ["ha", "hb"], ["y"], axis=1)]
    before, after, ops, counts = folded(model(nodes, inits))
    assert counts["merge_gemms"] == 1 and counts["split"] >= 4
    assert ops == ["ReduceMean", "Gemm", "Relu", "Gemm", "Sigmoid", "Concat", "Mul", "Gemm", "Split", "Concat"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_task_outputs_gathered_from_one_gemm_become_one_split():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C])
    outs = [helper.make_tensor_value_info(f"task{k}", TensorProto.FLOAT, ["N"]) for k in range(3)]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1)]
    nodes += [helper.make_node("Gather", ["logits", f"k{k}"], [f"task{k}"], axis=1) for k in range(3)]
    inits = [const("w", weights(4, C)), const("b", weights(4))] + [
        const(f"k{k}", np.array(c)) for k, c in enumerate((2, 0, 3))
    ]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits), opset_imports=[helper.make_opsetid("", 18)])
    feed = {"x": RNG.normal(size=(N, C)).astype(np.float32)}
    before = make_session(m, opt_level="none").run(None, feed)
    after_model, counts = fold_student(onnx.shape_inference.infer_shapes(m))
    after = make_session(after_model, opt_level="none").run(None, feed)
    assert [n.op_type for n in after_model.graph.node] == ["Gemm", "Reshape", "Split"]
    for a, b in zip(after, before):
        assert a.shape == b.shape == (N,)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
