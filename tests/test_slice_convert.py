"""Our Slice converter (runtime.convert.StaticSlice) against ONNX Runtime: constant bounds
with negative steps, negative axes, open and clamped ends, and a Slice whose bounds are
computed (onnx2torch's converter, kept), all without a warning; a transformer no other
test uses (tests/unseen_transformer.py: two extra tokens after the patches) through
export-teacher and `inspect --check`, its token boundaries found and converting."""

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from amalgam.runtime.convert import StaticSlice, to_torch
from amalgam.runtime.session import make_session
from tests.frameworks.cli import amalgam

BIG = np.iinfo(np.int64).max
CASES = {  # name: (starts, ends, axes, steps)
    "forward": ([1, 0], [3, BIG], [1, 2], [1, 2]),
    "backward": ([-1], [-BIG], [3], [-1]),
    "backward, stepped, negative axis": ([4, 2], [0, -BIG], [-1, 1], [-2, -1]),
    "clamped": ([-100], [100], [0], [1]),
}


def _slice_model(starts, ends, axes, steps, computed=False):
    """x [2, 4, 5, 6] -> Slice; ``computed``: its starts are the input's own sizes halved (run time)."""
    bounds = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    constants = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in bounds.items()]
    nodes = [helper.make_node("Slice", ["x", *bounds], ["y"])]
    if computed:
        constants = [c for c in constants if c.name != "starts"] + [
            numpy_helper.from_array(np.array(2, np.int64), "two")
        ]
        nodes[:0] = [
            helper.make_node("Shape", ["x"], ["sizes"], start=1, end=1 + len(starts)),
            helper.make_node("Div", ["sizes", "two"], ["starts"]),
        ]
    graph = helper.make_graph(
        nodes,
        "slice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("case", CASES)
def test_a_constant_slice_is_ours_and_matches_ort(case):
    model = _slice_model(*CASES[case])
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6)).astype(np.float32)
    want = make_session(model).run(None, {"x": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = to_torch(model)
        got = module(torch.from_numpy(x)).numpy()
    assert any(isinstance(m, StaticSlice) for m in module.modules())
    np.testing.assert_array_equal(got, want)


def test_a_computed_slice_keeps_onnx2torch_converter():
    model = _slice_model([1, 1], [BIG, BIG], [1, 2], [1, 1], computed=True)
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 6)).astype(np.float32)
    module = to_torch(model)
    assert not any(isinstance(m, StaticSlice) for m in module.modules())
    np.testing.assert_array_equal(module(torch.from_numpy(x)).numpy(), make_session(model).run(None, {"x": x})[0])


def test_a_transformer_no_test_has_seen_converts_at_every_token_boundary(tmp_path, capsys):
    path = tmp_path / "unseen.onnx"
    code, captured = amalgam(
        capsys, "export-teacher", "torch", "tests.unseen_transformer:encoder", "--input-shape", "1,3,16,16", "-o", path
    )
    assert code == 0, captured.err
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch
    code, captured = amalgam(capsys, "inspect", path, "--check", "--json")
    assert code == 0, captured.err
    assert "Warning" not in captured.err
    blocks = json.loads(captured.out)["blocks"]
    assert [(b["kind"], b["grid"], b["stride"], b["extra_tokens"], b["extra_at"]) for b in blocks] == [
        ("tokens", [4, 4], 4, 2, "end")
    ] * 3
    assert all(b["branch_ok"] and b["branch_max_abs_diff"] <= 1e-4 for b in blocks)
