"""Parity comparator, task agreement and runners, on arrays and on real ONNX models."""

import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amalgam.runtime.errors import BadInputError, ParityError
from amalgam.runtime.parity import EPS, ShapeError, ToleranceError, collect, compare, onnx_runner
from amalgam.runtime.torch_runner import torch_runner
from amalgam.toolkit.eval.metrics import agreement
from tests.builders import PlainCNN, export, randomize_bn


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(1)
    model = randomize_bn(PlainCNN())
    path = export(model, tmp_path_factory.mktemp("parity") / "cnn.onnx", opset=17, dynamo=False)
    return model, path


def perturbed_copy(path, out, scale=0.5):
    """``path`` with noise added to its largest initializer."""
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = onnx.numpy_helper.to_array(init)
    noisy = weights + np.random.default_rng(0).normal(0, scale, weights.shape).astype(weights.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out))
    return out


def test_statistics_match_numpy():
    ref = np.linspace(-2, 2, 1000).reshape(10, 100).astype(np.float32)
    cand = ref + np.random.default_rng(0).normal(0, 1e-3, ref.shape).astype(np.float32)
    out = compare({"y": ref}, {"y": cand}).outputs["y"]
    err = np.abs(cand.astype(np.float64) - ref)
    rel = err / (np.abs(ref.astype(np.float64)) + EPS)
    assert out.max_abs == pytest.approx(err.max())
    assert out.mean_abs == pytest.approx(err.mean())
    assert out.p99_abs == pytest.approx(np.percentile(err, 99, method="higher"))
    assert out.max_rel == pytest.approx(rel.max())
    assert out.p99_rel == pytest.approx(np.percentile(rel, 99, method="higher"))
    assert out.worst_index == np.unravel_index(np.argmax(err), err.shape)
    assert out.shape == (10, 100)


@settings(max_examples=60, deadline=None)
@given(
    ref=arrays(np.float64, 16, elements=st.floats(-100, 100, allow_subnormal=False)),
    noise=arrays(np.float64, 16, elements=st.floats(-0.05, 0.05, allow_subnormal=False)),
    atol=st.sampled_from([0.0, 1e-4, 1e-2]),
    rtol=st.sampled_from([0.0, 1e-3, 1e-2]),
)
def test_pass_rule_is_numpy_allclose_plus_a_scale_term(ref, noise, atol, rtol):
    cand = ref + noise
    plain = compare({"y": ref}, {"y": cand}, atol=atol, rtol=rtol, srtol=0)
    assert plain.passed == np.allclose(cand, ref, atol=atol, rtol=rtol)
    scaled = compare({"y": ref}, {"y": cand}, atol=atol, rtol=rtol, srtol=1e-4)
    assert scaled.passed == np.allclose(cand, ref, atol=atol + 1e-4 * np.abs(ref).max(), rtol=rtol)
    assert scaled.outputs["y"].scale == np.abs(ref).max()


def test_float_noise_at_a_huge_scale_passes_and_a_real_error_does_not():
    """Logits of order 1e9 (Inception-v3 at random weights), some near 0: float32 rounding of
    2e-6 of the scale passes the default srtol, which the elementwise rule alone fails; an error
    of 1e-4 of the scale on one logit fails."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3e8, (2, 1000))
    ref[0, :10] = rng.normal(0, 1e3, 10)  # logits near 0, where rtol * |ref| gives no slack
    noisy = ref + rng.normal(0, 2e-6 * np.abs(ref).max() / 3, ref.shape)
    assert compare({"logits": ref}, {"logits": noisy}).passed
    assert not compare({"logits": ref}, {"logits": noisy}, srtol=0).passed
    wrong = noisy.copy()
    wrong[1, 7] += 1e-4 * np.abs(ref).max()
    with pytest.raises(ToleranceError, match=r"srtol 1e-05 \* max\|ref\| 1\.\d+e\+09"):
        compare({"logits": ref}, {"logits": wrong}).raise_if_failed()


def test_failure_names_the_output_and_its_error():
    ref = {"logits": np.zeros((4, 5), np.float32), "feat": np.ones(3, np.float32)}
    cand = {"logits": ref["logits"].copy(), "feat": ref["feat"].copy()}
    cand["logits"][2, 3] = 0.5
    report = compare(ref, cand, title="simplified vs original")
    assert not report.passed and report.outputs["feat"].passed
    assert [o.name for o in report.failed] == ["logits"]
    with pytest.raises(ToleranceError) as e:
        report.raise_if_failed()
    assert isinstance(e.value, ParityError) and e.value.exit_code == 1
    assert "'logits'" in str(e.value) and "0.5" in str(e.value) and "[2, 3]" in str(e.value)
    assert "feat" not in str(e.value)


def test_per_output_tolerance_overrides_atol():
    ref = {"a": np.zeros(8), "b": np.zeros(8)}
    cand = {"a": np.full(8, 1e-3), "b": np.full(8, 1e-3)}
    report = compare(ref, cand, atol=1e-4, rtol=0, tolerances={"a": 2e-3})
    assert report.outputs["a"].passed and report.outputs["a"].atol == 2e-3
    assert not report.outputs["b"].passed
    with pytest.raises(BadInputError, match="'c'"):
        compare(ref, cand, tolerances={"c": 1.0})


def test_shape_mismatch_and_missing_output():
    with pytest.raises(ShapeError, match=r"'logits'.*\[8, 5\].*\[8, 4\]"):
        compare({"logits": np.zeros((8, 5))}, {"logits": np.zeros((8, 4))})
    with pytest.raises(ShapeError, match="'logits'"):
        compare({"logits": np.zeros(3)}, {"other": np.zeros(3)})
    assert issubclass(ShapeError, ParityError)


def test_non_finite_values():
    ref = np.array([np.nan, np.inf, 1.0, 2.0])
    same = compare({"y": ref}, {"y": ref.copy()})
    assert same.passed and same.outputs["y"].max_abs == 0.0
    bad = compare({"y": ref}, {"y": np.array([np.nan, np.inf, np.nan, 2.0])})
    assert not bad.passed and bad.outputs["y"].max_abs == np.inf
    assert not compare({"y": ref}, {"y": np.array([np.nan, 5.0, 1.0, 2.0])}).passed
    json.dumps(bad.to_dict())


def test_int8_rule_judges_the_error_energy_not_its_tail():
    """An int8 output whose rare elements round far off (a heavy tail) passes by SQNR and fails
    element-wise; logits handed to the wrong task fail by SQNR, and the clause says so."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3.5, (4000, 2))
    tail = logits + rng.normal(0, 0.05, logits.shape)
    tail.flat[::997] += 3.0  # five elements a rounding away across a ReLU's edge
    assert not compare({"y": logits}, {"y": tail}, atol=1.0, rtol=0.25).passed
    int8 = compare({"y": logits}, {"y": tail}, min_sqnr_db=20.0)
    assert int8.passed and 25 < int8.outputs["y"].sqnr_db < 40
    swapped = compare({"a": logits[:, 0], "b": logits[:, 1]}, {"a": logits[:, 1], "b": logits[:, 0]}, min_sqnr_db=20.0)
    assert not swapped.passed and max(o.sqnr_db for o in swapped.outputs.values()) < 5
    with pytest.raises(ToleranceError, match=r"'a': .*SQNR -?[0-9.]+ dB, below 20 dB"):
        swapped.raise_if_failed()
    assert compare({"y": logits}, {"y": logits.copy()}, min_sqnr_db=20.0).outputs["y"].sqnr_db == np.inf


def test_report_dict_and_markdown():
    ref = {"logits": np.zeros((2, 5)), "feat": np.ones((2, 3))}
    cand = {"logits": np.full((2, 5), 0.1), "feat": np.ones((2, 3))}
    report = compare(ref, cand)
    d = json.loads(json.dumps(report.to_dict()))
    for name in ("logits", "feat"):
        for key in ("max_abs", "mean_abs", "p99_abs", "max_rel", "mean_rel", "p99_rel", "passed", "shape"):
            assert key in d["outputs"][name]
    assert d["passed"] is False and d["max_abs"] == pytest.approx(0.1) and d["p99_abs"] == pytest.approx(0.1)
    assert d["outputs"]["feat"]["passed"] is True and d["outputs"]["logits"]["shape"] == [2, 5]
    md = report.to_markdown()
    assert "| output |" in md and "| logits | 2x5 |" in md and "FAIL" in md


def test_agreement_binary_and_multiclass():
    a = np.array([[2.0, -1.0], [0.5, 0.3], [-3.0, 4.0]])
    b = np.array([[1.0, 1.5], [0.2, 0.1], [-1.0, 2.0]])
    assert agreement("binary", a, b) == pytest.approx(5 / 6)
    assert agreement("multiclass", a, b) == pytest.approx(2 / 3)


def test_onnx_runner_same_file_matches_exactly(cnn):
    _, path = cnn
    x = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    reference, candidate = onnx_runner(path), onnx_runner(path, opt_level="full")
    assert reference.output_names == ["logits"]
    report = compare(reference({"x": x}), candidate(x), atol=1e-5, rtol=0)
    assert report.passed, report.to_markdown()
    with pytest.raises(BadInputError, match="'x'"):
        reference({"image": x})


def test_perturbed_onnx_fails_parity(cnn, tmp_path):
    _, path = cnn
    noisy = perturbed_copy(path, tmp_path / "noisy.onnx")
    x = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
    report = compare(onnx_runner(path)(x), onnx_runner(noisy)(x), title="noisy vs original")
    assert not report.passed and report.outputs["logits"].max_abs > 1e-2
    with pytest.raises(ParityError, match="noisy vs original.*'logits': max abs error"):
        report.raise_if_failed()


def test_torch_runner_matches_onnx_runner(cnn):
    model, path = cnn
    batches = [np.random.default_rng(i).random((n, 1, 28, 28), dtype=np.float32) for i, n in enumerate((1, 7))]
    ours, theirs = collect(torch_runner(model), batches), collect(onnx_runner(path), batches)
    assert ours["logits"].shape == (8, 5)
    report = compare(ours, theirs, atol=1e-4, rtol=1e-3, title="onnx vs torch")
    assert report.passed, report.to_markdown()
    assert agreement("binary", ours["logits"], theirs["logits"]) == 1.0
