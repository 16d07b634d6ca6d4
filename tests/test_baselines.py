"""The baselines beside the layer-wise student, in the same harness: multi-teacher KD,
layer-wise feature amalgamation (``baseline.layerwise_ka``) and common feature learning
(``baseline.cfl``), each on the student's final architecture, trained for real on small
synthetic data from two real ONNX teachers."""

import json

import numpy as np
import pytest

from amalgam.runtime.errors import ConfigError
from amalgam.toolkit.config import load_config
from amalgam.toolkit.data import split_holdout
from amalgam.toolkit.eval.tables import run_summary
from amalgam.toolkit.eval.thresholds import net_thresholds
from amalgam.toolkit.method.amalgamate import amalgamate, tap_rows
from amalgam.toolkit.student.io import load_student, read_spec
from amalgam.toolkit.teachers import load_teachers, split_data
from tests.builders import export
from tests.student_run import one_thread
from tests.student_run import write_config as run_config
from tests.synthetic import SIZE, make_images, save_npz, train_teacher

CLASSES = {"A": [0, 1, 2], "B": [5, 6, 7]}
CHOSEN = ["c0", "c2", "c6"]
BASELINES = ["kd", "layerwise_ka", "cfl"]
TERMS = {"layerwise_ka": ("regress", "reconstruct"), "cfl": ("common", "reconstruct")}


def write_config(root, **baseline):
    # no hint: the feature baselines alone must make the cache keep every row's taps
    return run_config(
        root,
        root / "train.npz",
        root / "test.npz",
        finetune_epochs=1,
        hint_weight=0.0,
        extra={"evaluation": {"threshold": "calibrated"}, "baseline": baseline},
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run with all three baselines on (4 blocks x 1 + 1 fine-tune = 5 epochs each)."""
    root = tmp_path_factory.mktemp("baselines")
    with one_thread():
        images, labels = make_images(1500, seed=1, noise=1.2)
        for i, (name, classes) in enumerate(CLASSES.items()):
            model = train_teacher(classes, images, labels, epochs=2, seed=i + 1)
            export(model, root / f"{name.lower()}.onnx", input_shape=(2, 1, SIZE, SIZE))
        save_npz(root / "train.npz", *make_images(800, seed=2, noise=1.2))
        save_npz(root / "test.npz", *make_images(300, seed=3, noise=1.2))
        config = load_config(write_config(root, kd=True, layerwise_ka=True, cfl=True))
        metrics = amalgamate(config, out=root / "run", quiet=True, cache_root=root / "cache")
    return config, root, metrics


def test_every_baseline_is_saved_and_scored_like_kd(run):
    config, root, metrics = run
    out = root / "run"
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["summary"] == metrics["summary"]
    for name in BASELINES:
        assert (out / name / "spec.json").exists() and (out / name / "weights.safetensors").exists()
        summary = metrics["summary"][name]
        assert 0.5 < summary["f1"] <= 1.0 and 0.8 < summary["agreement"] <= 1.0, (name, summary)
        assert all(name in row and "f1" in row[name] for row in metrics["eval"])
    text = run_summary(metrics)
    assert "LW-KA F1" in text and "CFL agree" in text and "KD F1" in text


def test_feature_modules_are_training_only(run):
    """A feature baseline's net has the KD baseline's very parameters: no auto-encoder, no encoders."""
    out = run[1] / "run"
    kd, _ = load_student(out / "kd")
    names = {k: v.shape for k, v in kd.state_dict().items()}
    for name in ("layerwise_ka", "cfl"):
        net, _ = load_student(out / name)
        assert {k: v.shape for k, v in net.state_dict().items()} == names


def test_feature_loss_terms_fall_over_the_run(run):
    log = [json.loads(line) for line in (run[1] / "run" / "metrics.jsonl").read_text().splitlines()]
    for name, terms in TERMS.items():
        records = [r for r in log if r.get("event") == "feature_loss" and r["phase"] == name]
        assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
        for term in terms:
            assert records[-1][term] < records[0][term], (name, term, records[0][term], records[-1][term])
    assert not any(r.get("event") == "feature_loss" and r["phase"] == "kd" for r in log)


def test_thresholds_follow_the_same_rule(run):
    """Each baseline's thresholds: its spec's, in metrics.json, recomputed from its saved net on
    the held-out split by the calibrated rule, as the student's and KD's."""
    config, root, metrics = run
    teachers = load_teachers(config)
    train = split_data(config, teachers, config.data.train, root / "cache", progress=False, tap_rows=None)
    holdout = split_holdout(len(train), config.data.holdout, config.training.seed)[1]
    kinds = {t.name: t.kind for tg in teachers for t in tg.tasks}
    for name in BASELINES:
        spec = read_spec(root / "run" / name)
        assert metrics["thresholds"][name] == spec["thresholds"] and set(spec["thresholds"]) == set(CHOSEN)
        again = net_thresholds("calibrated", load_student(root / "run" / name)[0], train, holdout, kinds)
        assert again == pytest.approx(spec["thresholds"], abs=1e-4)


def test_feature_baselines_keep_every_rows_taps(run):
    config, root, _ = run
    assert tap_rows(config) == "all"
    data = split_data(config, load_teachers(config), config.data.train, root / "cache", progress=False, tap_rows="all")
    assert data.taps[("B", 4)][np.arange(len(data))].shape[0] == 800


@pytest.mark.parametrize("key,value", [("layerwise_ka", 3), ("cfl", "maybe")])
def test_a_typo_is_one_config_error_line(tmp_path, key, value):
    path = write_config(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path, [f"baseline.{key}={value}"])
    message = str(e.value)
    assert "\n" not in message and f"baseline.{key}: expected a valid boolean" in message, message


def test_autoencoder_start_is_the_best_linear_one():
    """The PCA start reconstructs features of rank <= the code width exactly, and a narrower
    code keeps the top components: its error is the variance left in the others."""
    import torch
    from torch import nn

    from amalgam.toolkit.method.feature_baselines import fit_autoencoder

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 10, generator=g) * torch.tensor([[3.0], [2.0], [1.0]])
    pixels = torch.randn(8 * 5 * 5, 3, generator=g) @ basis + 4.0  # rank 3, off-centre
    features = pixels.reshape(8, 5, 5, 10).permute(0, 3, 1, 2)
    for width in (4, 2):
        encoder, decoder = nn.Conv2d(10, width, 1), nn.Conv2d(width, 10, 1)
        fit_autoencoder(encoder, decoder, features)
        with torch.no_grad():
            error = (decoder(encoder(features)) - features).pow(2).sum(1).mean()
        left = torch.linalg.svdvals(pixels - pixels.mean(0))[width:].pow(2).sum() / len(pixels)
        assert float(error) == pytest.approx(float(left), abs=1e-3)
        assert width == 2 or float(error) < 1e-3
