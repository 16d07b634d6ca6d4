"""``amalgam plan``: its cache estimate against the bytes a real target pass writes."""

import json
from pathlib import Path

import pytest

from amalgam.toolkit.cli import main
from amalgam.toolkit.config import load_config
from amalgam.toolkit.method.amalgamate import tap_rows
from amalgam.toolkit.teachers import load_teachers, split_data
from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import base_config, write_config
from tests.synthetic import SIZE, make_images, save_npz


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    for name in ("a", "b"):
        export(
            randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)),
            root / f"{name}.onnx",
            input_shape=(2, 1, SIZE, SIZE),
            opset=17,
            dynamo=False,
        )
    save_npz(root / "train.npz", *make_images(700, seed=2))
    save_npz(root / "test.npz", *make_images(300, seed=3))
    return root


def folder_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def plan_json(capsys, config_path, *args):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["plan", str(config_path), "--json", *args])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    return json.loads(out)


# float32 / float16 taps of every training row (feature hint on); without the hint, only
# the adapter-fit sample's taps (a second, small cache per teacher), unless a feature
# baseline is on: it reads every row's taps too; teacher views: the training split's
# logits once more per view
@pytest.mark.parametrize(
    "tap_dtype,hint,baseline,views",
    [
        ("float32", 0.1, {}, []),
        ("float16", 0.1, {}, []),
        ("float32", 0.0, {}, []),
        ("float32", 0.0, {"cfl": True}, []),
        ("float32", 0.0, {}, ["hflip", "shift:1"]),
    ],
)
def test_cache_estimate_is_within_ten_percent_of_the_written_cache(
    tmp_path, assets, capsys, tap_dtype, hint, baseline, views
):
    config = base_config(assets)
    config["data"]["eval"] = {"format": "numpy", "path": str(assets / "test.npz")}
    config["data"]["tap_dtype"] = tap_dtype
    config["training"]["hint_weight"] = hint
    config["training"]["teacher_views"] = views
    config["baseline"].update(baseline)
    path = write_config(tmp_path, config)
    plan = plan_json(capsys, path, "--nproc", "2")
    assert plan["images"] == {"train": 700, "eval": 300} and plan["world"] == 2
    assert plan["student_params"] > plan["trunk_params"] > 0 and plan["seconds"]["total"] > 0

    loaded = load_config(path)
    teachers = load_teachers(loaded)
    assert len(plan["prefix_bytes"]) == len(teachers[0].boundaries) - 1 >= 1  # stages 2..L
    split_data(
        loaded, teachers, loaded.data.train, tmp_path / "cache", progress=False, tap_rows=tap_rows(loaded), views=views
    )
    split_data(loaded, teachers, loaded.data.eval, tmp_path / "cache", progress=False, tap_rows=None)
    for row in plan["teachers"]:  # teacher A's cache folder is named after its file, a.onnx
        actual = sum(folder_bytes(d) for d in (tmp_path / "cache" / "targets").glob(f"{row['name'].lower()}-*"))
        assert abs(row["bytes"] - actual) <= 0.1 * actual, (row, actual)
    assert abs(plan["inputs_bytes"] - folder_bytes(tmp_path / "cache" / "inputs")) <= 0.1 * plan["inputs_bytes"]


def test_only_a_feature_baseline_makes_the_plan_count_every_rows_taps(tmp_path, assets, capsys):
    config = base_config(assets)
    config["training"]["hint_weight"] = 0.0
    taps = {}
    for name in ("kd", "layerwise_ka"):
        config["baseline"] = {name: True}
        plan = plan_json(capsys, write_config(tmp_path, config, f"{name}.yaml"))
        taps[name] = sum(r["taps_bytes"] for r in plan["teachers"])
    # every one of the 700 training rows' taps, against the adapter-fit sample's (the 525 rows outside the holdout)
    assert taps["layerwise_ka"] == pytest.approx(taps["kd"] * 700 / 525, rel=0.05)


def test_plan_prints_a_table(tmp_path, assets, capsys):
    path = write_config(tmp_path, base_config(assets))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["plan", str(path)])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "images: train 700" in out and "frozen prefix of stage 2" in out and "student params" in out
    assert "time estimate (1 process)" in out


def test_plan_settles_auto_epochs_and_warns_when_the_data_is_small(tmp_path, assets, capsys):
    """525 training rows at batch 32 (17 steps an epoch): `auto` takes the caps (4 per block, 60
    fine-tune) and still falls short of 2,500 fine-tune steps: the plan says so before the run."""
    config = base_config(assets)
    config["training"].update(epochs_per_block="auto", finetune_epochs="auto")
    found = plan_json(capsys, write_config(tmp_path, config))
    assert found["epochs"] == {"per_block": 4, "finetune": 60}
    assert found["warnings"] == [
        "the training data is small for this recipe: 525 training rows give 1,020 fine-tune steps in 60 epochs, "
        "short of 2,500; the run may name tasks that lag their teachers: more images (data.train) or more epochs "
        "(training.finetune_epochs)"
    ]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["plan", str(write_config(tmp_path, config))])
    assert "warning: the training data is small for this recipe" in capsys.readouterr().out


def test_without_the_hint_only_the_adapter_fit_sample_keeps_features(tmp_path, assets):
    """hint_weight 0: the training split's cache holds logits alone; a second cache holds the
    first 1024 training rows' taps, which fit the adapters; the run trains to the end."""
    import json

    import numpy as np

    from amalgam.runtime.errors import DataError
    from amalgam.toolkit.method.amalgamate import amalgamate

    save_npz(tmp_path / "train.npz", *make_images(1500, seed=4))  # 1125 training rows after the holdout
    config = base_config(assets)
    config["data"]["train"]["path"] = str(tmp_path / "train.npz")
    config["training"].update(hint_weight=0.0, epochs_per_block=1)
    loaded = load_config(write_config(tmp_path, config))
    amalgamate(loaded, out=tmp_path / "run", quiet=True, cache_root=tmp_path / "cache")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]["student"]["agreement"] > 0

    manifests = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "targets").glob("*/manifest.json")]
    assert sorted((m["n"], bool(m["parts"]["taps"])) for m in manifests) == [(1024, True)] * 2 + [(1500, False)] * 2
    data = split_data(
        loaded, load_teachers(loaded), loaded.data.train, tmp_path / "cache", progress=False, tap_rows=tap_rows(loaded)
    )
    sample = tap_rows(loaded)(1500)
    assert len(sample) == 1024 and data.taps[("A", 1)][sample[:3]].shape[0] == 3
    missing = np.setdiff1d(np.arange(1500), sample)[:1]
    with pytest.raises(DataError, match="not cached"):
        data.taps[("A", 1)][missing]
