"""Our Reshape converter: flatten and view heads from the dynamo exporter cut, convert,
match ONNX Runtime, and export again under dynamo with the batch axis still open."""

import io

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import helper, numpy_helper

from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.convert import StaticReshape, to_torch
from amalgam.runtime.cut import cut_branch
from amalgam.runtime.errors import UnsupportedOpError
from amalgam.runtime.normalize import normalize
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import add_taps
from tests.builders import export, randomize_bn


class FlatHeadCNN(nn.Module):
    """Two conv stages, then a flatten head written one of the three usual ways."""

    def __init__(self, head):
        super().__init__()
        self.head_kind = head
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        y = self.features(x)
        if self.head_kind == "nn.Flatten":
            y = self.flatten(y)
        elif self.head_kind == "view":
            y = y.view(y.size(0), -1)
        else:
            y = torch.flatten(y, 1)
        return self.fc(y)


HEADS = ("nn.Flatten", "view", "torch.flatten")


@pytest.fixture(scope="module", params=HEADS)
def flat_teacher(request, tmp_path_factory):
    path = export(randomize_bn(FlatHeadCNN(request.param)), tmp_path_factory.mktemp("flat") / "t.onnx")
    return onnx.load(path)


def _ort(model, taps, x):
    session = make_session(add_taps(model, taps), opt_level="basic")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"x": x})))


def test_dynamo_flatten_heads_write_reshape_allowzero_1(flat_teacher):
    reshapes = [n for n in flat_teacher.graph.node if n.op_type == "Reshape"]
    assert reshapes and all(a.i == 1 for n in reshapes for a in n.attribute if a.name == "allowzero")


def test_every_boundary_converts_and_matches_ort(flat_teacher):
    graph = normalize(flat_teacher)
    boundaries = [b.name for b in find_boundaries(graph)]
    assert len(boundaries) >= 2
    for batch in (1, 3):
        x = np.random.randn(batch, 1, 28, 28).astype(np.float32)
        values = _ort(graph, boundaries, x)
        for name in boundaries:
            with torch.no_grad():
                got = to_torch(cut_branch(graph, name, ["logits"]))(torch.from_numpy(values[name])).numpy()
            assert got.shape == values["logits"].shape
            assert np.abs(got - values["logits"]).max() <= 1e-5, (name, batch)


def test_converted_piece_exports_under_dynamo_with_a_dynamic_batch(flat_teacher):
    graph = normalize(flat_teacher)
    first = find_boundaries(graph)[0].name
    branch = to_torch(cut_branch(graph, first, ["logits"]))
    x = np.random.randn(2, 1, 28, 28).astype(np.float32)
    feature = torch.from_numpy(_ort(graph, [first], x)[first])
    shapes = ({0: torch.export.Dim("batch")},)
    torch.export.export(branch, (feature,), dynamic_shapes=shapes)  # no data-dependent branch to trip on
    buffer = io.BytesIO()
    program = torch.onnx.export(
        branch, (feature,), None, dynamo=True, verbose=False, dynamic_shapes=shapes, external_data=False
    )
    program.save(buffer)
    again = onnx.load_from_string(buffer.getvalue())
    assert again.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    session = make_session(again, opt_level="basic")
    for batch in (1, 5):
        rows = torch.from_numpy(np.random.randn(batch, *feature.shape[1:]).astype(np.float32))
        with torch.no_grad():
            want = branch(rows).numpy()
        got = session.run(None, {session.get_inputs()[0].name: rows.numpy()})[0]
        assert got.shape == (batch, 3) and np.abs(got - want).max() <= 1e-5


# ---- hand-built Reshape nodes: allowzero 0 and 1, a 0 in the target, a computed target ----


def _reshape_model(in_shape, target, allowzero, opset=14, computed=False):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    attrs = {} if opset < 14 else {"allowzero": allowzero}
    if computed:  # target = Shape(x): known only at run time, until normalize folds it
        nodes = [
            helper.make_node("Shape", ["x"], ["target"]),
            helper.make_node("Reshape", ["x", "target"], ["y"], name="flat", **attrs),
        ]
        inits = []
    else:
        nodes = [helper.make_node("Reshape", ["x", "target"], ["y"], name="flat", **attrs)]
        inits = [numpy_helper.from_array(np.array(target, np.int64), "target")]
    graph = helper.make_graph(nodes, "reshape", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "in_shape,target,allowzero,opset",
    [
        ((3, 4, 5), [0, -1], 0, 13),  # 0 copies the batch
        ((3, 4, 5), [0, 4, 5], 0, 21),
        ((3, 4, 5), [-1, 20], 1, 14),  # allowzero=1 with no 0: the same as 0
        ((3, 4, 5), [3, -1], 1, 19),
        ((0, 4, 5), [0, 20], 1, 14),  # allowzero=1 with a 0: a zero-size axis, exactly
        ((2, 3), [-1], 0, 5),
    ],
)
def test_static_reshape_matches_ort(in_shape, target, allowzero, opset):
    model = _reshape_model(in_shape, target, allowzero, opset)
    x = np.random.randn(*in_shape).astype(np.float32)
    want = make_session(model, opt_level="basic").run(None, {"x": x})[0]
    module = to_torch(model)
    assert any(isinstance(m, StaticReshape) for m in module.modules())
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and np.array_equal(got, want)


def test_a_target_computed_at_run_time_is_refused_naming_the_node():
    model = _reshape_model((2, 3), None, 1, computed=True)
    with pytest.raises(UnsupportedOpError, match="Reshape node 'flat'.*computed at run time"):
        to_torch(model)
