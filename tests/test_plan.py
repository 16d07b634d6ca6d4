"""``amalgam plan``: its cache estimate against the bytes a real target pass writes."""

import json
from pathlib import Path

import pytest

from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import base_config, write_config
from tests.synthetic import SIZE, make_images, save_npz
from toolkit.cli import main
from toolkit.config import load_config
from toolkit.teachers import load_teachers, split_data


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    for name in ("a", "b"):
        export(randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)), root / f"{name}.onnx",
               input_shape=(2, 1, SIZE, SIZE), opset=17, dynamo=False)
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


@pytest.mark.parametrize("tap_dtype", ["float32", "float16"])
def test_cache_estimate_is_within_ten_percent_of_the_written_cache(tmp_path, assets, capsys, tap_dtype):
    config = base_config(assets)
    config["data"]["eval"] = {"format": "numpy", "path": str(assets / "test.npz")}
    config["data"]["tap_dtype"] = tap_dtype
    path = write_config(tmp_path, config)
    plan = plan_json(capsys, path, "--nproc", "2")
    assert plan["images"] == {"train": 700, "eval": 300} and plan["world"] == 2
    assert plan["student_params"] > plan["trunk_params"] > 0 and plan["seconds"]["total"] > 0

    loaded = load_config(path)
    teachers = load_teachers(loaded)
    assert len(plan["prefix_bytes"]) == len(teachers[0].boundaries) - 1 >= 1  # stages 2..L
    for spec in (loaded.data.train, loaded.data.eval):
        split_data(loaded, teachers, spec, tmp_path / "cache", progress=False)
    for row in plan["teachers"]:  # teacher A's cache folder is named after its file, a.onnx
        actual = sum(folder_bytes(d) for d in (tmp_path / "cache" / "targets").glob(f"{row['name'].lower()}-*"))
        assert abs(row["bytes"] - actual) <= 0.1 * actual, (row, actual)
    assert abs(plan["inputs_bytes"] - folder_bytes(tmp_path / "cache" / "inputs")) <= 0.1 * plan["inputs_bytes"]


def test_plan_prints_a_table(tmp_path, assets, capsys):
    path = write_config(tmp_path, base_config(assets))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["plan", str(path)])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "images: train 700" in out and "frozen prefix of stage 2" in out and "student params" in out
    assert "time estimate (1 process)" in out
