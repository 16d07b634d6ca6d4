"""Normalising, cutting and converting real teachers, checked against ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import to_torch, unsupported_ops
from amalgam.runtime.cut import cut_block, cut_branch, cut_prefix
from amalgam.runtime.errors import BadInputError, BoundaryError, UnknownTapError, UnsupportedOpError
from amalgam.runtime.normalize import normalize
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import add_taps
from tests.builders import SECNN, PlainCNN, ResidualCNN, export, randomize_bn

EXPORTS = {"opset17-legacy": (17, False), "opset18-dynamo": (18, True)}


@pytest.fixture(
    scope="module",
    params=[(c, e) for c in (PlainCNN, ResidualCNN) for e in EXPORTS],
    ids=lambda p: f"{p[0].__name__}-{p[1]}",
)
def teacher(request, tmp_path_factory):
    cls, key = request.param
    opset, dynamo = EXPORTS[key]
    path = export(randomize_bn(cls()), tmp_path_factory.mktemp("cut") / "t.onnx", opset=opset, dynamo=dynamo)
    return onnx.load(path)


def ort_values(model, taps, batch=3):
    """Graph outputs and taps under ONNX Runtime for a random batch."""
    x = np.random.randn(batch, 1, 28, 28).astype(np.float32)
    session = make_session(add_taps(model, taps), opt_level="basic")
    names = [o.name for o in session.get_outputs()]
    return x, dict(zip(names, session.run(names, {"x": x})))


def test_branch_after_each_boundary_matches_ort_and_passes_gradients(teacher):
    boundaries = [b.name for b in find_boundaries(teacher)]
    _, values = ort_values(teacher, boundaries)
    for name in boundaries:
        branch = cut_branch(teacher, name, ["logits"])
        assert [i.name for i in branch.graph.input] == [name]
        assert branch.graph.input[0].type.tensor_type.shape.dim[0].dim_param
        module = to_torch(branch)
        assert all(p.requires_grad for p in module.parameters())
        feature = torch.from_numpy(values[name]).requires_grad_(True)
        out = module(feature)
        assert np.abs(out.detach().numpy() - values["logits"]).max() <= 1e-5
        out.square().sum().backward()
        assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_block_and_prefix_match_ort(teacher):
    first, second = [b.name for b in find_boundaries(teacher)][:2]
    x, values = ort_values(teacher, [first, second])
    block = to_torch(cut_block(teacher, first, second))
    prefix = to_torch(cut_prefix(teacher, first))
    with torch.no_grad():
        assert np.abs(block(torch.from_numpy(values[first])).numpy() - values[second]).max() <= 1e-5
        assert np.abs(prefix(torch.from_numpy(x)).numpy() - values[first]).max() <= 1e-5


def test_pieces_keep_only_needed_initializers(teacher):
    boundaries = [b.name for b in find_boundaries(teacher)]
    last = cut_branch(teacher, boundaries[-1], ["logits"])
    read = {n for node in last.graph.node for n in node.input}
    assert {t.name for t in last.graph.initializer} <= read
    assert len(last.graph.initializer) < len(teacher.graph.initializer)


def test_branch_to_a_subset_of_outputs(tmp_path):
    model = onnx.load(export(randomize_bn(SECNN()), tmp_path / "se.onnx", opset=18, dynamo=True))
    pooled = next(n.output[0] for n in model.graph.node if n.op_type == "ReduceMean" and n.output[0] != "mean")
    two_heads = add_taps(model, [pooled])
    assert len(two_heads.graph.output) == 2
    start = find_boundaries(two_heads)[0].name
    branch = cut_branch(two_heads, start, ["logits"])
    assert [o.name for o in branch.graph.output] == ["logits"]
    _, values = ort_values(two_heads, [start])
    with torch.no_grad():
        got = to_torch(branch)(torch.from_numpy(values[start])).numpy()
    assert np.abs(got - values["logits"]).max() <= 1e-5


def test_cut_at_bad_boundaries(teacher):
    with pytest.raises(UnknownTapError, match="relu_typo"):
        cut_branch(teacher, "relu_typo", ["logits"])
    jumped = [n.input[0] for n in teacher.graph.node if n.op_type == "Add"]  # inside residual units
    for name in jumped:
        with pytest.raises(BoundaryError, match=f"{name!r} is not on the main path.*valid boundaries: "):
            cut_branch(teacher, name, ["logits"])


def test_outputs_before_the_start_are_refused(teacher):
    first, second = [b.name for b in find_boundaries(teacher)][:2]
    with pytest.raises(BoundaryError, match="from before its start"):
        cut_block(teacher, second, first)


# ---- normalize: a hand-built graph shaped like tf2onnx output ----


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_value"))


def tf_like_model(tail=None, spatial=28):
    """x -> Conv -> Relu 'feat' -> Reshape(feat, [Shape(feat)[0], tail]) -> MatMul -> Add.

    Weights are Constant nodes; ``tail`` None computes H*W*C from Shape(x), as
    tf2onnx does; an int puts that constant (e.g. -1) into the target instead.
    """
    rng = np.random.default_rng(1)
    flat = 4 * 28 * 28
    nodes = [
        _const("w", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        _const("b", rng.standard_normal(4).astype(np.float32)),
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("Shape", ["feat"], ["feat_shape"]),
        _const("zero", np.array(0, np.int64)),
        helper.make_node("Gather", ["feat_shape", "zero"], ["n"], axis=0),
        _const("axis0", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
    ]
    if tail is None:
        nodes += [
            helper.make_node("Shape", ["x"], ["x_shape"]),
            _const("from2", np.array([2], np.int64)),
            _const("to4", np.array([4], np.int64)),
            helper.make_node("Slice", ["x_shape", "from2", "to4"], ["hw"]),
            helper.make_node("ReduceProd", ["hw"], ["hw_prod"], keepdims=1),
            _const("channels", np.array([4], np.int64)),
            helper.make_node("Mul", ["hw_prod", "channels"], ["flat"]),
        ]
    else:
        nodes.append(_const("flat", np.array([tail], np.int64)))
    nodes += [
        helper.make_node("Concat", ["n1", "flat"], ["target"], axis=0),
        helper.make_node("Reshape", ["feat", "target"], ["flat_feat"]),
        _const("W", (rng.standard_normal((flat, 3)) * 0.01).astype(np.float32)),
        helper.make_node("MatMul", ["flat_feat", "W"], ["mm"]),
        _const("B", rng.standard_normal(3).astype(np.float32)),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, spatial, spatial])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])
    model = helper.make_model(
        helper.make_graph(nodes, "tf_like", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    onnx.checker.check_model(model)
    return model


def _run(model, x):
    return make_session(model, opt_level="basic").run(["logits"], {"x": x})[0]


@pytest.mark.parametrize("tail,rewritten", [(None, [-1, 3136]), (-1, [0, -1])])
def test_normalize_folds_shape_subgraph_keeping_batch_dynamic(tail, rewritten):
    original = tf_like_model(tail)
    normal = normalize(original)
    ops = [n.op_type for n in normal.graph.node]
    assert ops == ["Conv", "Relu", "Reshape", "MatMul", "Add"]
    target = {t.name: numpy_helper.to_array(t) for t in normal.graph.initializer}["target"]
    assert target.tolist() == rewritten
    for batch in (1, 5):
        x = np.random.randn(batch, 1, 28, 28).astype(np.float32)
        np.testing.assert_allclose(_run(normal, x), _run(original, x), rtol=1e-5, atol=1e-6)
    assert find_boundaries(normal)[0].name == "feat"
    assert normalize(normal).SerializeToString() == normal.SerializeToString()


def test_normalize_needs_open_dims_fixed():
    open_spatial = tf_like_model(spatial="H")
    open_spatial.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    with pytest.raises(BadInputError, match="input 'x' has open dims .*--input-shape x:1,1,224,224"):
        normalize(open_spatial)
    fixed = normalize(open_spatial, {"x": [1, 1, 28, 28]})
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    x = np.random.randn(2, 1, 28, 28).astype(np.float32)
    np.testing.assert_allclose(_run(fixed, x), _run(tf_like_model(), x), rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="names input 'y'"):
        normalize(open_spatial, {"y": [1, 1, 28, 28]})


def test_normalize_keeps_exported_teacher(teacher):
    normal = normalize(teacher)
    assert [n.output[0] for n in normal.graph.node] == [n.output[0] for n in teacher.graph.node]
    assert [b.name for b in find_boundaries(normal)] == [b.name for b in find_boundaries(teacher)]
    assert normalize(normal).SerializeToString() == normal.SerializeToString()


# ---- convert: opset-18 reductions, Split-18, unsupported ops ----


def _opset18(nodes, inits, out_shapes):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 10, 3, 4])
    outs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in out_shapes]
    graph = helper.make_graph(nodes, "ops18", [x], outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_opset18_reductions_and_split_match_ort():
    model = _opset18(
        [
            helper.make_node("ReduceMean", ["x", "hw"], ["mean"], keepdims=0),
            helper.make_node("ReduceMax", ["x", "c"], ["max"]),
            helper.make_node("ReduceSumSquare", ["x", "hw"], ["sq"]),
            helper.make_node("Split", ["x"], ["s0", "s1", "s2"], axis=1, num_outputs=3),
        ],
        {"hw": np.array([2, 3], np.int64), "c": np.array([1], np.int64)},
        ["mean", "max", "sq", "s0", "s1", "s2"],
    )
    x = np.random.randn(2, 10, 3, 4).astype(np.float32)
    want = make_session(model).run(None, {"x": x})
    assert [w.shape[1] for w in want[3:]] == [4, 4, 2]
    with torch.no_grad():
        got = to_torch(model)(torch.from_numpy(x))
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.abs(g.numpy() - w).max() <= 1e-5


def test_unsupported_op_names_op_and_node():
    model = _opset18(
        [helper.make_node("Relu", ["x"], ["r"], name="act"), helper.make_node("Hardmax", ["r"], ["y"], name="pick")],
        {},
        ["y"],
    )
    assert unsupported_ops(model) == {"Hardmax": ["pick"]}
    with pytest.raises(UnsupportedOpError, match=r"ops18.*Hardmax \(nodes: pick\)"):
        to_torch(model)


def test_same_padding_becomes_explicit_pads_that_convert():
    """auto_pad SAME_* (jax2onnx, tf2onnx) is made explicit; uneven padding goes where ONNX puts it."""
    w = numpy_helper.from_array(np.random.randn(3, 1, 4, 4).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("MaxPool", ["act"], ["logits"], kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 9, 9])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3, 5, 5])
    model = helper.make_model(
        helper.make_graph(nodes, "same_pad", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    normal = normalize(model)
    pads = [[a.ints for a in n.attribute if a.name == "pads"][0] for n in normal.graph.node if n.op_type != "Relu"]
    assert [list(p) for p in pads] == [[1, 1, 2, 2], [1, 1, 0, 0]]
    xs = np.random.randn(2, 1, 9, 9).astype(np.float32)
    with torch.no_grad():
        got = to_torch(normal)(torch.from_numpy(xs)).numpy()
    assert np.abs(got - _run(model, xs)).max() <= 1e-5


def test_batchnorm_piece_matches_ort_in_eval_mode():
    rng = np.random.default_rng(2)
    c = 4
    inits = {
        "w": rng.standard_normal((c, 1, 3, 3)),
        "scale": rng.random(c) + 0.5,
        "shift": rng.standard_normal(c),
        "mean": rng.standard_normal(c) * 0.1,
        "var": rng.random(c) + 0.5,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", c, 8, 8])
    graph = helper.make_graph(
        nodes, "bn", [x], [y], [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = to_torch(model)
    assert not module.training
    xs = np.random.randn(3, 1, 8, 8).astype(np.float32)
    for _ in range(2):  # running statistics are not touched by a forward pass
        with torch.no_grad():
            assert np.abs(module(torch.from_numpy(xs)).numpy() - _run(model, xs)).max() <= 1e-5


def batch_reshaped_before_and_after():
    """x -> Conv -> Reshape to [batch, 4, 8, 8] -> Relu -> Conv -> Relu -> Reshape to [batch, -1] -> Gemm, both
    Reshapes taking the batch from one ``Shape(x, start=0, end=1)``, as the dynamo exporter writes a ``view``
    of ``x.size(0)`` (a ViT's class token expanded to the batch is the same pattern)."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 1, 3, 3)),
        "w2": rng.standard_normal((4, 4, 3, 3)),
        "wf": rng.standard_normal((2, 256)),
    }
    inits = [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in {"chw": [4, 8, 8], "rest": [-1]}.items()]
    nodes = [
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["batch", "chw"], ["shape1"], axis=0),
        helper.make_node("Reshape", ["c1", "shape1"], ["a"]),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Conv", ["ra", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["rb"]),
        helper.make_node("Concat", ["batch", "rest"], ["shape2"], axis=0),
        helper.make_node("Reshape", ["rb", "shape2"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf"], ["logits"], transB=1),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph(nodes, "batch_twice", [x], [logits], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("start", ["ra", "rb"])
def test_a_batch_size_read_before_the_start_is_read_again_from_it(start):
    """The piece reads the batch from its start, while what the start is computed from keeps its own
    ``Shape``: rewiring that one too made a cycle (StopIteration in the topological sort)."""
    model = batch_reshaped_before_and_after()
    branch = cut_branch(model, start, ["logits"])
    assert "x" not in {i for n in branch.graph.node for i in n.input}
    session = make_session(add_taps(model, [start]), opt_level="basic")
    piece = make_session(branch, opt_level="basic")
    for batch in (1, 5):
        x = np.random.randn(batch, 1, 8, 8).astype(np.float32)
        logits, tap = session.run(["logits", start], {"x": x})
        assert np.abs(piece.run(["logits"], {start: tap})[0] - logits).max() <= 1e-5
