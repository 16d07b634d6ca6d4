"""Block boundaries of real exported CNNs: dominators where a stage ends."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from amalgam.runtime.blocks import check_boundary, dominates_outputs, find_boundaries
from amalgam.runtime.errors import BoundaryError, UnknownTapError
from tests.builders import SECNN, PlainCNN, ResidualCNN, export, randomize_bn
from tests.test_cut_convert import tf_like_model

EXPORTS = {"opset17-legacy": (17, False), "opset18-dynamo": (18, True)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    cache = {}

    def get(cls, key):
        if (cls, key) not in cache:
            opset, dynamo = EXPORTS[key]
            path = export(randomize_bn(cls()), folder / f"{cls.__name__}-{key}.onnx", opset=opset, dynamo=dynamo)
            cache[cls, key] = onnx.load(path)
        return cache[cls, key]

    return get


def _producer(model, name):
    return next(n for n in model.graph.node if name in n.output)


def _jumped_over(model, add):
    """Tensors a residual skip jumps over: ancestors of one Add operand but not the other."""

    def ancestors(name):
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            node = next((n for n in model.graph.node if t in n.output), None)
            if node is not None and t not in seen:
                seen.add(t)
                todo += list(node.input)
        return seen

    a, b = ancestors(add.input[0]), ancestors(add.input[1])
    return (a | b) - (a & b)


@pytest.mark.parametrize("key", EXPORTS)
def test_plain_cnn_has_one_boundary_per_stage(exported, key):
    model = exported(PlainCNN, key)
    blocks = find_boundaries(model)
    assert [b.shape[1:] for b in blocks] == [[8, 14, 14], [16, 7, 7], [32, 3, 3], [64, 3, 3]]
    assert [_producer(model, b.name).op_type for b in blocks] == ["MaxPool"] * 3 + ["Relu"]
    assert all(b.layout == "NCHW" and isinstance(b.shape[0], str) for b in blocks)
    assert all(dominates_outputs(model, b.name) for b in blocks)


@pytest.mark.parametrize("key", EXPORTS)
def test_residual_cnn_boundaries_skip_the_unit_insides(exported, key):
    model = exported(ResidualCNN, key)
    blocks = [b.name for b in find_boundaries(model)]
    assert len(blocks) == 3
    inside = set()
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        inside |= _jumped_over(model, add)
    assert len(inside) >= 9
    assert not inside & set(blocks)
    assert not any(dominates_outputs(model, t) for t in inside)
    for name in blocks:  # each ends a residual unit: Relu(Add(...))
        assert model.graph.node[[n.output[0] for n in model.graph.node].index(name)].op_type == "Relu"
        assert _producer(model, _producer(model, name).input[0]).op_type == "Add"


@pytest.mark.parametrize("key", EXPORTS)
def test_se_side_path_is_not_a_boundary(exported, key):
    model = exported(SECNN, key)
    mul = next(n for n in model.graph.node if n.op_type == "Mul")
    gate = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    before = next(t for t in mul.input if t != gate.output[0])
    squeeze = next(n for n in model.graph.node if n.op_type == "ReduceMean" and n.input[0] == before)
    side = [squeeze.output[0], gate.output[0], gate.input[0]]
    assert dominates_outputs(model, before)
    assert not any(dominates_outputs(model, t) for t in side)
    blocks = find_boundaries(model)
    assert [b.name for b in blocks][0] == mul.output[0]
    assert [b.shape[1:] for b in blocks] == [[8, 14, 14], [16, 7, 7]]
    with pytest.raises(BoundaryError, match=f"{gate.output[0]!r} is not on the main path.*{mul.output[0]}"):
        check_boundary(model, gate.output[0])
    check_boundary(model, before)  # a dominator, though not a stage end


def test_unknown_boundary_names_the_tensor(exported):
    model = exported(PlainCNN, "opset18-dynamo")
    with pytest.raises(UnknownTapError, match="unknown boundary 'relu_99'.*closest"):
        check_boundary(model, "relu_99")


def test_shape_subgraph_tensors_are_not_boundaries():
    model = tf_like_model()
    shape_side = ["feat_shape", "n", "n1", "x_shape", "hw", "flat", "target"]
    assert not any(dominates_outputs(model, t) for t in shape_side)
    assert dominates_outputs(model, "feat") and dominates_outputs(model, "flat_feat")
    assert [b.name for b in find_boundaries(model)] == ["feat"]


def test_nhwc_layout_follows_transposes():
    w = numpy_helper.from_array(np.random.randn(4, 3, 3, 3).astype(np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["conv"], ["conv_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["conv_nhwc"], ["feat"]),
        helper.make_node("ReduceMean", ["feat"], ["pooled"], axes=[1, 2], keepdims=0),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16, 16, 3])
    y = helper.make_tensor_value_info("pooled", onnx.TensorProto.FLOAT, ["N", 4])
    model = helper.make_model(
        helper.make_graph(nodes, "nhwc", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    [block] = find_boundaries(model)
    assert (block.name, block.shape, block.layout) == ("feat", ["N", 16, 16, 4], "NHWC")
