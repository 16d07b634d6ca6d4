"""Teacher targets averaged over augmented views (training.teacher_views): real ONNX
teachers, real ONNX Runtime passes, the real target cache."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from amalgam.toolkit.config import load_config
from amalgam.toolkit.data.views import offsets, parse_view
from amalgam.toolkit.method.amalgamate import amalgamate
from amalgam.toolkit.teachers import load_teachers, split_data
from amalgam.toolkit.teachers.averaged import chance_corrected, self_agreement
from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import assert_bad_input, base_config, run_cli, write_config
from tests.synthetic import SIZE, make_images, save_npz


def mirror_symmetric(model, asymmetry=0.0):
    """Every conv kernel's left-right antisymmetric part scaled by ``asymmetry``. At 0 the
    net (even sizes at every pooling) is equivariant to a horizontal flip and its
    global-pooled logits invariant; at 0.2 a flip changes some of its decisions."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                w = m.weight.clone()
                m.weight.copy_((w + w.flip(-1)) / 2 + asymmetry * (w - w.flip(-1)) / 2)
    return model


def centred(model, images):
    """The head's bias set so that half of ``images`` fall on each side of every logit's 0."""
    with torch.no_grad():
        model.head.bias -= model(torch.from_numpy(images.astype(np.float32) / 255)).median(0).values
    return model


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A: a random net whose decisions a flip changes (some of them); B: flip-invariant."""
    root = tmp_path_factory.mktemp("views")
    torch.manual_seed(0)  # module fixtures run before the per-test seeding
    images, labels = make_images(600, seed=2)
    save_npz(root / "train.npz", images, labels)
    shape = dict(input_shape=(2, 1, SIZE, SIZE), opset=17, dynamo=False)
    a = mirror_symmetric(randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)), asymmetry=0.2)
    export(centred(a, images), root / "a.onnx", **shape)
    export(mirror_symmetric(randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5))), root / "b.onnx", **shape)
    return root


def load(tmp_path, assets, **training):
    config = base_config(assets)
    config["training"].update(training)
    return load_config(write_config(tmp_path, config))


def build(config, cache, views=None):
    views = config.training.teacher_views if views is None else views
    return split_data(
        config, load_teachers(config), config.data.train, cache, progress=False, tap_rows=None, views=views
    )


def test_a_flip_invariant_teacher_keeps_hflip_and_its_targets_stay(tmp_path, assets):
    config = load(tmp_path, assets, teacher_views=["hflip"])
    data = build(config, tmp_path / "cache")
    assert data.views["B"] == {"hflip": {"agreement": 1.0, "kappa": 1.0, "kept": True}}
    np.testing.assert_allclose(data.logits["b2"], np.asarray(data.plain_logits["b2"]), atol=1e-4)


def test_a_teacher_under_the_threshold_drops_the_view(tmp_path, assets):
    measured = build(load(tmp_path, assets, teacher_views=["hflip"], view_agreement=0.0), tmp_path / "cache")
    found = measured.views["A"]["hflip"]
    score = found["kappa"]
    assert found["kept"] and 0 < score < found["agreement"] < 1.0
    # kept: the target is the mean probability over the plain and the mirrored image,
    # the mirrored one computed here by its own ONNX Runtime session
    images = np.load(assets / "train.npz")["images"].astype(np.float32) / 255
    session = ort.InferenceSession(str(assets / "a.onnx"), providers=["CPUExecutionProvider"])
    mirrored = session.run(None, {"x": np.ascontiguousarray(images[..., ::-1])})[0][:, 0]
    plain = np.asarray(measured.plain_logits["a0"])
    expected = (1 / (1 + np.exp(-plain)) + 1 / (1 + np.exp(-mirrored))) / 2
    np.testing.assert_allclose(1 / (1 + np.exp(-measured.logits["a0"])), expected, atol=1e-5)

    above = (score + 1.0) / 2
    dropped = build(load(tmp_path, assets, teacher_views=["hflip"], view_agreement=above), tmp_path / "cache")
    assert dropped.views["A"]["hflip"] == {**found, "kept": False}
    assert dropped.logits["a0"] is dropped.plain_logits["a0"]


def test_each_view_is_cached_once(tmp_path, assets):
    config = load(tmp_path, assets, teacher_views=["hflip", "shift:1"])
    build(config, tmp_path / "cache")
    manifests = sorted((tmp_path / "cache" / "targets").glob("*/manifest.json"))
    assert len(manifests) == 2 * 3  # two teachers: the plain view, hflip, shift:1
    averaged = sorted((tmp_path / "cache" / "averaged").glob("*.npy"))
    assert [p.name.split("-")[0] for p in averaged] == ["b2"]  # B keeps hflip, A keeps nothing
    stamps = [p.stat().st_mtime_ns for p in manifests + averaged]
    again = build(config, tmp_path / "cache", views=["shift:1", "hflip", "hflip"])
    assert sorted((tmp_path / "cache" / "targets").glob("*/manifest.json")) == manifests
    assert sorted((tmp_path / "cache" / "averaged").glob("*.npy")) == averaged
    assert [p.stat().st_mtime_ns for p in manifests + averaged] == stamps
    assert set(again.views["A"]) == {"hflip", "shift:1"}


def test_shift_moves_each_image_by_its_own_offsets():
    x = np.random.default_rng(0).random((40, 1, 6, 6)).astype(np.float32)
    view = parse_view("shift:1")
    moved, steps = view(x, np.arange(40)), offsets(np.arange(40), 1)
    assert view.name == "shift:1" and parse_view("shift").name == "shift:2"
    assert len({tuple(s) for s in steps}) == 9  # every (dy, dx) in [-1, 1]^2 shows up
    for i, (dy, dx) in enumerate(steps):
        np.testing.assert_array_equal(moved[i, 0, 1:5, 1:5], x[i, 0, 1 - dy : 5 - dy, 1 - dx : 5 - dx])
    np.testing.assert_array_equal(view(x[7:9], [7, 8]), moved[7:9])  # a row's shift does not depend on its batch


@pytest.mark.parametrize("bad", ["vflip", "shift:0", "shift:x"])
def test_a_bad_view_name_is_one_config_error(tmp_path, assets, capsys, bad):
    config = base_config(assets)
    config["training"]["teacher_views"] = ["hflip", bad]
    result = run_cli(capsys, "plan", write_config(tmp_path, config))
    assert_bad_input(result, "training.teacher_views[1]", "expected 'hflip' or 'shift:N'", repr(bad))
    assert len(result.err.strip().splitlines()) == 1


def test_views_need_a_held_out_split(tmp_path, assets, capsys):
    config = base_config(assets)
    config["training"]["teacher_views"] = ["hflip"]
    config["data"]["holdout"] = 0
    assert_bad_input(
        run_cli(capsys, "plan", write_config(tmp_path, config)), "training.teacher_views: needs data.holdout > 0"
    )


def test_the_run_records_each_teachers_self_agreement(tmp_path, assets, capsys):
    config = load(tmp_path, assets, teacher_views=["hflip"])
    metrics = amalgamate(config, out=tmp_path / "run", cache_root=tmp_path / "cache")
    assert metrics["teacher_views"]["B"]["hflip"] == {"agreement": 1.0, "kappa": 1.0, "kept": True}
    a = metrics["teacher_views"]["A"]["hflip"]
    assert not a["kept"] and a["kappa"] < 0.95  # the default
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("teacher views: ")]
    assert said == [
        f"teacher views: A drops hflip: self-agreement kappa {a['kappa']:.4f} (agreement "
        f"{a['agreement']:.4f}) on the held-out split, under training.view_agreement 0.95",
        "teacher views: B's targets averaged over the plain view and hflip (kappa 1.0000)",
    ]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["teacher_views"] == metrics["teacher_views"]
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    views = [e for e in events if e["event"] == "views"]
    assert len(views) == 1 and views[0]["teachers"] == metrics["teacher_views"] and views[0]["minimum"] == 0.95


def test_kappa_sees_a_view_that_misses_every_rare_positive():
    """10% positives, all lost on the view: 0.9 of the decisions agree, none beyond chance."""
    plain = np.where(np.arange(100) < 10, 2.0, -2.0)
    assert self_agreement("binary", plain, -np.ones(100)) == 0.9
    assert chance_corrected("binary", plain, -np.ones(100)) == 0.0
    assert chance_corrected("binary", plain, plain) == 1.0 == chance_corrected("binary", -plain[10:], -plain[10:])
    classes = np.eye(3)[np.arange(30) % 3]  # multiclass: argmax
    assert chance_corrected("multiclass", classes, classes[::-1]) == pytest.approx(
        (np.mean(np.arange(30) % 3 == (29 - np.arange(30)) % 3) - 1 / 3) / (2 / 3)
    )
