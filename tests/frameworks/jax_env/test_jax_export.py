"""JAX exporter, in .venv-jax (jax, flax, jax2onnx, no torch)."""

import importlib.util

import numpy as np
import onnx
import pytest
from flax import nnx, serialization

from amalgam.exporters.jax_export import export_jax
from amalgam.exporters.metadata import read_metadata
from amalgam.runtime.errors import ExportError, ParityError
from amalgam.runtime.session import make_session
from tests.frameworks.cli import amalgam
from tests.frameworks.jax_env.models import SmallCNN, plain_mlp, small_cnn, trained_like_state

FACTORY = "tests.frameworks.jax_env.models:small_cnn"


def _ort(path, x, name="logits"):
    return make_session(path, opt_level="basic").run([name], {"x": x})[0]


def _images(n=4, nhwc=True, seed=3):
    x = np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)
    return x if nhwc else np.transpose(x, (0, 3, 1, 2))


def test_environment_has_no_torch():
    assert importlib.util.find_spec("torch") is None


@pytest.mark.parametrize("nchw", [True, False])
def test_nnx_module_ort_matches_flax(tmp_path, nchw):
    model = small_cnn()
    out = tmp_path / "t.onnx"
    summary = export_jax(model, out, (1, 28, 28, 1), nchw=nchw)
    x = _images()
    np.testing.assert_allclose(
        _ort(out, x if not nchw else _images(nhwc=False)), np.asarray(model(x)), atol=1e-4, rtol=1e-3
    )
    meta = read_metadata(out)
    assert meta["framework"] == "jax" and meta["layout"] == summary["layout"] == ("NCHW" if nchw else "NHWC")
    graph = onnx.load(out).graph
    same = [n.name for n in graph.node for a in n.attribute if a.name == "auto_pad" and a.s.startswith(b"SAME")]
    assert same == [], "SAME padding left implicit (onnx2torch cannot convert it)"


def test_plain_function_with_parameters(tmp_path):
    fn, params = plain_mlp()
    out = tmp_path / "f.onnx"
    export_jax(fn, out, (1, 28, 28, 1), params=params, output_names=["scores"])
    x = _images()
    np.testing.assert_allclose(_ort(out, x, "scores"), np.asarray(fn(params, x)), atol=1e-4, rtol=1e-3)


def test_max_pool_without_strides_is_caught(tmp_path):
    """jax2onnx strides by the window where Flax strides 1: the check (exit 1) names the cause."""
    model = SmallCNN(nnx.Rngs(0), channels=(4, 8), pool_strides=None)
    with pytest.raises(ParityError, match="outputs differ.*without strides"):
        export_jax(model, tmp_path / "t.onnx", (1, 28, 28, 1))
    assert list(tmp_path.iterdir()) == []


def test_positional_pooling_arguments_are_explained(tmp_path):
    def fn(x):
        return nnx.max_pool(x, (2, 2), (2, 2)).mean(axis=(1, 2, 3))

    with pytest.raises(ExportError, match="pooling arguments as keywords"):
        export_jax(fn, tmp_path / "t.onnx", (1, 8, 8, 1))


def test_cli_with_msgpack_and_npz_weights(tmp_path, capsys):
    state = trained_like_state()
    (tmp_path / "w.msgpack").write_bytes(serialization.msgpack_serialize(state))
    flat = {}

    def walk(tree, prefix=""):
        for k, v in tree.items():
            walk(v, f"{prefix}{k}/") if isinstance(v, dict) else flat.__setitem__(f"{prefix}{k}", np.asarray(v))

    walk(state)
    np.savez(tmp_path / "w.npz", **flat)
    reference = small_cnn()
    own = nnx.state(reference)
    nnx.replace_by_pure_dict(own, state)
    nnx.update(reference, own)
    reference.eval()
    x = _images()
    for weights in ("w.msgpack", "w.npz"):
        out = tmp_path / f"{weights}.onnx"
        code, io = amalgam(
            capsys,
            "export-teacher",
            "jax",
            FACTORY,
            "--weights",
            tmp_path / weights,
            "--input-shape",
            "1,28,28,1",
            "--tasks",
            "logits:digit=a|b|c|d|e",
            "-o",
            out,
        )
        assert code == 0, io.err
        np.testing.assert_allclose(_ort(out, x), np.asarray(reference(x)), atol=1e-4, rtol=1e-3)
        assert read_metadata(out)["tasks"][0]["slice"] == [0, 5]


def test_cli_bad_inputs(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", nothing=np.zeros(1))
    cases = [
        (["--weights", tmp_path / "bad.npz"], "parameter names do not match"),
        (["--weights", tmp_path / "w.pkl"], "no such weights file"),
    ]
    for extra, message in cases:
        code, io = amalgam(
            capsys, "export-teacher", "jax", FACTORY, "--input-shape", "1,28,28,1", *extra, "-o", tmp_path / "t.onnx"
        )
        assert code == 2 and message in io.err
    code, io = amalgam(
        capsys,
        "export-teacher",
        "jax",
        "tests.frameworks.jax_env.models:nope",
        "--input-shape",
        "1,28,28,1",
        "-o",
        tmp_path / "t.onnx",
    )
    assert code == 2 and "has no callable 'nope'" in io.err
    code, io = amalgam(capsys, "export-teacher", "jax", FACTORY, "-o", tmp_path / "t.onnx")
    assert code == 2 and "--input-shape is required" in io.err
    assert not (tmp_path / "t.onnx").exists()
