"""Targets reconciled over the classes of one label (data.one_of): real ONNX teachers,
real ONNX Runtime passes, the real target cache and a real amalgamation."""

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from amalgam.toolkit.config import load_config
from amalgam.toolkit.data import split_holdout
from amalgam.toolkit.method.amalgamate import amalgamate
from amalgam.toolkit.runlog import RunLog
from amalgam.toolkit.student.io import load_student
from amalgam.toolkit.teachers import load_teachers, split_data
from amalgam.toolkit.teachers.one_of import held_out_record, log_one_of, reconcile
from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import assert_bad_input, base_config, run_cli, write_config
from tests.synthetic import SIZE, make_images, save_npz

GROUP = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_of")
    torch.manual_seed(0)
    images, labels = make_images(400, seed=3)
    save_npz(root / "train.npz", images, labels)
    shape = dict(input_shape=(2, 1, SIZE, SIZE), opset=17, dynamo=False)
    for name in ("a", "b"):
        export(randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)), root / f"{name}.onnx", **shape)
    return root


def load(tmp_path, assets, one_of=(GROUP,), **top):
    config = base_config(assets, **top)
    config["data"]["one_of"] = [list(g) for g in one_of]
    return load_config(write_config(tmp_path, config))


def ort_probabilities(assets, mirrored=False):
    """Every task's probability on the training images (``mirrored``: flipped left-right),
    each teacher in its own session."""
    images = np.load(assets / "train.npz")["images"].astype(np.float32) / 255
    images = np.ascontiguousarray(images[..., ::-1]) if mirrored else images
    out = {}
    for name in ("a", "b"):
        session = ort.InferenceSession(str(assets / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        z = session.run(None, {"x": images})[0]
        out.update({f"{name}{i}": 1 / (1 + np.exp(-z[:, i].astype(np.float64))) for i in range(5)})
    return out


def test_chosen_targets_are_the_teachers_probabilities_renormalised_over_the_group(tmp_path, assets):
    config = load(tmp_path, assets)
    teachers = load_teachers(config)
    assert [t.name for t in teachers[0].runner.tasks] == ["a0", "a1", "a2", "a3", "a4"]  # the unchosen read too
    assert [t.name for t in teachers[0].tasks] == ["a0", "a1"]  # ... and never learned
    data = split_data(
        config,
        teachers,
        config.data.train,
        tmp_path / "cache",
        progress=False,
        tap_rows=None,
        one_of=config.data.one_of,
    )
    p = ort_probabilities(assets)
    total = sum(p.values())
    assert sorted(data.logits) == ["a0", "a1", "b2"]
    # data.one_of_rule auto (the default): exact when every class of the group fires on the
    # held-out rows (decided positive at 0.5 at least 0.8 of its mean probability), else at_most
    holdout = split_holdout(400, config.data.holdout, config.training.seed)[1]
    fires = {t: np.mean(p[t][holdout] > 0.5) / np.mean(p[t][holdout]) for t in GROUP}
    [record] = data.one_of
    assert record["fires"] == pytest.approx(fires, abs=1e-3)
    assert record["rule"] == ("exact" if min(fires.values()) >= 0.8 else "at_most")
    divisor = total if record["rule"] == "exact" else np.maximum(total, 1)
    for task in data.logits:
        np.testing.assert_allclose(1 / (1 + np.exp(-data.logits[task])), p[task] / divisor, atol=1e-5)
        np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(data.own_logits[task]))), p[task], atol=1e-5)
        assert data.plain_logits[task] is data.own_logits[task]  # evaluation compares with the teachers' own
    assert record["tasks"] == GROUP and sorted(record["changed"]) == ["a0", "a1", "b2"]
    assert record["sum_mean"] > 1.5  # random teachers: each says yes about half the time
    assert record["sum_mean"] == pytest.approx(total[holdout].mean(), abs=1e-4)
    assert record["sum_off_share"] == pytest.approx(np.mean(np.abs(total[holdout] - 1) > 0.5), abs=1e-4)
    for task, share in record["changed"].items():
        flips = (np.asarray(data.own_logits[task])[holdout] > 0) != (data.logits[task][holdout] > 0)
        assert share == pytest.approx(flips.mean(), abs=1e-4)
    assert max(record["changed"].values()) > 0


def test_with_teacher_views_every_task_of_the_group_is_averaged_before_reconciling(tmp_path, assets):
    config = load(
        tmp_path,
        assets,
        training={
            "epochs_per_block": 0,
            "finetune_epochs": 0,
            "batch_size": 32,
            "teacher_views": ["hflip"],
            "view_agreement": 0.0,
        },
    )
    data = split_data(
        config,
        load_teachers(config),
        config.data.train,
        tmp_path / "cache",
        progress=False,
        tap_rows=None,
        views=config.training.teacher_views,
        one_of=config.data.one_of,
    )
    assert all(v["hflip"]["kept"] for v in data.views.values())
    plain, mirrored = ort_probabilities(assets), ort_probabilities(assets, mirrored=True)
    p = {task: (plain[task] + mirrored[task]) / 2 for task in plain}  # unchosen tasks too
    total = sum(p.values())
    for task in data.logits:
        np.testing.assert_allclose(1 / (1 + np.exp(-data.logits[task])), p[task] / total, atol=1e-5)
    assert not np.allclose(sum(plain.values()), total, atol=1e-3)  # the views do change the group's sum


def test_without_one_of_the_targets_are_the_teachers_own(tmp_path, assets):
    config = load(tmp_path, assets, one_of=())
    teachers = load_teachers(config)
    assert [t.name for t in teachers[0].runner.tasks] == ["a0", "a1"]
    data = split_data(config, teachers, config.data.train, tmp_path / "cache", progress=False, tap_rows=None)
    assert data.one_of == [] and all(data.logits[t] is data.own_logits[t] is data.plain_logits[t] for t in data.logits)


@pytest.mark.parametrize("rule", ["exact", "at_most"])
def test_reconcile_sums_to_one_in_chunks_and_survives_extreme_logits(monkeypatch, rule):
    """``exact``: every image's probabilities sum to 1; ``at_most``: to at most 1, each image
    under 1 left as it was."""
    import amalgam.toolkit.teachers.one_of as one_of

    rng = np.random.default_rng(0)
    z = {t: rng.normal(scale=30, size=1000).astype(np.float32) for t in "xyz"}
    whole = reconcile(list("xyz"), z, rule=rule)
    monkeypatch.setattr(one_of, "ROWS", 64)
    chunked = reconcile(list("xyz"), z, rule=rule)
    q = np.stack([1 / (1 + np.exp(-whole[t].astype(np.float64))) for t in "xyz"])
    p = np.stack([1 / (1 + np.exp(-z[t].astype(np.float64))) for t in "xyz"])
    over = p.sum(0) > 1
    assert np.isfinite(q).all() and 100 < over.sum() < 900
    if rule == "exact":
        assert np.allclose(q.sum(0), 1, atol=1e-5)
    else:
        assert np.allclose(q[:, over].sum(0), 1, atol=1e-5) and np.allclose(q[:, ~over], p[:, ~over], atol=1e-6)
    for t in "xyz":
        np.testing.assert_array_equal(whole[t], chunked[t])
    assert list(reconcile(list("xyz"), z, keep=["y"], rule=rule)) == ["y"]


def test_the_student_learns_the_reconciled_targets_and_kd_its_teachers_own(tmp_path, assets, capsys):
    training = {"epochs_per_block": 0, "finetune_epochs": 1, "batch_size": 32}

    def run(name, one_of, baseline_one_of=False):
        config = base_config(assets, baseline={"kd": True, "one_of": baseline_one_of})
        config["training"].update(training)
        config["data"]["one_of"] = one_of
        config = load_config(write_config(tmp_path, config, f"{name}.yaml"))
        metrics = amalgamate(config, out=tmp_path / name, cache_root=tmp_path / "cache")
        return metrics, {m: load_student(tmp_path / name / m)[0].state_dict() for m in ("student", "kd")}

    plain, plain_nets = run("plain", [])
    capsys.readouterr()
    reconciled, nets = run("reconciled", [GROUP])
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data.one_of: ")]
    assert len(said) == 1 and "targets of a0, a1, b2 reconciled over 10 classes" in said[0]
    assert "one_of" not in plain and reconciled["one_of"][0]["tasks"] == GROUP
    assert json.loads((tmp_path / "reconciled" / "metrics.json").read_text())["one_of"] == reconciled["one_of"]

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(nets["kd"], plain_nets["kd"])  # KD: each task from its own teacher
    assert not same(nets["student"], plain_nets["student"])
    _, both = run("both", [GROUP], baseline_one_of=True)
    assert not same(both["kd"], plain_nets["kd"])  # baseline.one_of: KD learns them too


@pytest.mark.parametrize(
    "one_of, field, message",
    [
        ([["a0", "zz"]], "data.one_of[0][1]", "no teacher has a task 'zz'"),
        ([["a0", "a1"], ["a1", "b0"]], "data.one_of[1][0]", "task 'a1' is already in data.one_of[0]"),
        ([["a3", "b4"]], "data.one_of[0]", "none of its tasks is chosen"),
        ([["a0", "c0"]], "data.one_of[0][1]", "task 'c0' is of teacher 'C', which owns no chosen task"),
        ([["a0", "c1"]], "data.one_of[0][1]", "task 'c1' is multiclass"),
        ([["a0"]], "data.one_of[0]", "expected at least 2 item(s)"),
    ],
)
def test_a_bad_group_is_one_error(tmp_path, assets, capsys, one_of, field, message):
    config = base_config(assets)
    third = copy.deepcopy(config["teachers"][1])
    third.update(
        name="C",
        tasks=[
            {"name": "c0", "output": "logits", "index": 0},
            {"name": "c1", "output": "logits", "slice": [0, 3], "kind": "multiclass"},
        ],
    )
    config["teachers"].append(third)
    config["data"]["one_of"] = one_of
    result = run_cli(capsys, "plan", write_config(tmp_path, config))
    assert_bad_input(result, field, message)
    assert len(result.err.strip().splitlines()) == 1


def test_without_a_held_out_split_the_record_says_none(tmp_path, capsys):
    z = {t: np.linspace(-3, 3, 8).astype(np.float32) for t in "xyz"}
    fires = {t: 1.0 for t in "xyz"}
    record = held_out_record(list("xyz"), z, reconcile(list("xyz"), z, ["x"]), np.arange(0), "exact", fires)
    assert record == {
        "tasks": ["x", "y", "z"],
        "sum_mean": None,
        "sum_off_share": None,
        "changed": {"x": None},
        "rule": "exact",
        "fires": fires,
    }
    log_one_of(RunLog(tmp_path / "log.jsonl"), [record])
    assert (
        "data.one_of: targets of x reconciled over 3 classes, exact (the class that fires least: x 1.00) "
        "(no held-out split to measure them on)" in capsys.readouterr().err
    )


def test_measure_one_of_scores_both_targets_on_labeled_rows(tmp_path, assets, capsys):
    import samples.measure_one_of as measure

    config = base_config(assets)
    config["data"].update(one_of=[GROUP], labels={"a0": {"class": 0}, "a1": {"class": 1}, "b2": {"class": 7}})
    measure.main([str(write_config(tmp_path, config)), "--rows", "0:400", "--cache", str(tmp_path / "cache")])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["each teacher's own", "reconciled (data.one_of)"]
    own, fixed = (np.array(r[1:], dtype=float) for r in rows)
    assert own.shape == (4,) and np.all((own >= 0) & (own <= 1)) and np.all((fixed >= 0) & (fixed <= 1))
    assert own[3] == pytest.approx(own[:3].mean(), abs=1e-4) and not np.array_equal(own, fixed)
