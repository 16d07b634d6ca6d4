"""``amalgam inspect`` on real exported teachers and on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amalgam.toolkit.cli import main
from tests.builders import PlainCNN, ResidualCNN, export, randomize_bn


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspect")
    return {
        "plain18": export(randomize_bn(PlainCNN()), folder / "plain18.onnx", opset=18, dynamo=True),
        "residual17": export(randomize_bn(ResidualCNN()), folder / "residual17.onnx", opset=17, dynamo=False),
    }


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_json_lists_io_and_blocks(capsys, teachers):
    code, out, _ = run_cli(capsys, teachers["plain18"], "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"inputs", "outputs", "opset", "producer", "blocks"}
    assert report["inputs"] == [{"name": "x", "shape": ["batch", 1, 28, 28], "dtype": "float32"}]
    assert report["outputs"] == [{"name": "logits", "shape": ["batch", 5], "dtype": "float32"}]
    assert report["opset"] == 18 and report["producer"].startswith("pytorch")
    assert [b["shape"][1] for b in report["blocks"]] == [8, 16, 32, 64]
    assert all(set(b) == {"name", "shape", "layout", "kind"} and b["layout"] == "NCHW" for b in report["blocks"])
    assert all(b["kind"] == "map" for b in report["blocks"])


@pytest.mark.parametrize("key", ["plain18", "residual17"])
def test_check_compares_every_branch(capsys, teachers, key):
    code, out, _ = run_cli(capsys, teachers[key], "--json", "--check", "--input-shape", "x:1,1,28,28")
    assert code == 0
    blocks = json.loads(out)["blocks"]
    assert len(blocks) == {"plain18": 4, "residual17": 3}[key]
    for b in blocks:
        assert set(b) == {"name", "shape", "layout", "kind", "branch_ok", "branch_max_abs_diff", "branch_p99_abs_diff"}
        assert b["branch_ok"] is True and 0 <= b["branch_p99_abs_diff"] <= b["branch_max_abs_diff"] <= 1e-5


def test_table_shows_blocks(capsys, teachers):
    code, out, _ = run_cli(capsys, teachers["residual17"], "--check")
    assert code == 0
    assert "candidate blocks:" in out and "/units/units.2/Relu_1_output_0" in out
    assert out.count(" ok ") == 3 and "opset: 17" in out


def test_failed_check_exits_1_after_reporting(capsys, teachers):
    code, out, err = run_cli(capsys, teachers["plain18"], "--check", "--atol", "-1", "--rtol", "0")
    assert code == 1 and "FAIL" in out
    assert err.startswith("error: ") and "4 of 4 branches differ from ONNX Runtime" in err
    assert len(err.splitlines()) == 1 and err.count("'logits': max abs error") == 4


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"not a model at all\n", "not an ONNX model"),
        (None, "truncated"),
    ],
)
def test_bad_files_exit_2_without_traceback(capsys, tmp_path, teachers, content, expected):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content if content is not None else teachers["plain18"].read_bytes()[:3000])
    code, _, err = run_cli(capsys, path)
    assert code == 2 and err.startswith("error: ") and "bad.onnx" in err and expected in err
    assert "Traceback" not in err


def test_bad_input_shape_exits_2(capsys, teachers):
    code, _, err = run_cli(capsys, teachers["plain18"], "--input-shape", "image:1,1,28,28")
    assert code == 2 and "error: " in err and "'image'" in err and "['x']" in err
    code, _, err = run_cli(capsys, teachers["plain18"], "--input-shape", "x:1,one,28")
    assert code == 2 and "--input-shape 'x:1,one,28'" in err


def test_installed_command_exits_2_on_missing_file(tmp_path):
    amalgam = Path(sys.executable).parent / "amalgam"
    if not amalgam.exists():
        pytest.skip("the amalgam console script is not installed in this environment")
    proc = subprocess.run(
        [str(amalgam), "inspect", str(tmp_path / "gone.onnx")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "gone.onnx" in proc.stderr and "Traceback" not in proc.stderr


def test_help_has_an_example(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "amalgam inspect teacher.onnx" in out and "--input-shape" in out


def open_dims_model(path):
    """A third-party-style file: input [-1, 3, '?', <empty>], a flatten whose target is
    computed from the input's shape, so that nothing folds until the dims are given."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w1", (4, 3, 3, 3)), ("w2", (8, 4, 3, 3)), ("W", (8, 5)))
    ]
    inits += [
        numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("axis0", [0]), ("rest", [-1]))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
        helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["pooled", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, "?", None])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [-1, 5])
    graph = helper.make_graph(nodes, "open_dims", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_input_shape_closes_every_open_dim_and_a_minus_1_batch(capsys, tmp_path):
    path = open_dims_model(tmp_path / "open.onnx")
    code, out, err = run_cli(capsys, path, "--check", "--json", "--input-shape", "x:1,3,48,192")
    assert code == 0, err
    blocks = json.loads(out)["blocks"]
    assert [b["shape"][1:] for b in blocks] == [[4, 48, 192], [8, 24, 96]]
    assert all(b["branch_ok"] for b in blocks)


@pytest.mark.parametrize("check", [True, False], ids=["check", "plain"])
def test_open_dims_error_example_works_when_pasted(capsys, tmp_path, check):
    import re
    import shlex

    path = open_dims_model(tmp_path / "open.onnx")
    flags = ["--check"] if check else []
    code, _, err = run_cli(capsys, path, *flags)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    pasted = shlex.split(re.search(r"e\.g\. (--input-shape \S+)", err).group(1))
    code, out, err = run_cli(capsys, path, *flags, *pasted)
    assert code == 0, err
    assert "candidate blocks:" in out
