"""Teachers that do not fit the config or the data, through ``amalgam amalgamate``:
refused with exit 2, naming the teacher's config field and file, before any
training; no temp file is left in the run dir or the cache."""

import onnx
from onnx import numpy_helper

from amalgam.runtime.blocks import dominates_outputs
from tests.robustness.contract import assert_bad_input, assert_no_partial_files, base_config, write_config
from tests.robustness.test_bad_models import with_shrink_head


def amalgamate(cli, tmp_path, config):
    out, cache = tmp_path / "run", tmp_path / "cache"
    result = cli("amalgamate", write_config(tmp_path, config), "--out", out, "--quiet", "--cache-dir", cache)
    assert_no_partial_files(out, cache)
    return result


def test_teacher_input_shape_incompatible_with_the_data(cli, assets, tmp_path):
    config = base_config(assets)
    config["teachers"][0]["preprocess"]["channels"] = 3  # the graph takes grey images
    assert_bad_input(
        amalgamate(cli, tmp_path, config), "teachers[0].preprocess", "a.onnx", "dim 1 is 3, the graph fixes it to 1"
    )


def test_teachers_disagree_on_input_size(cli, assets, tmp_path):
    """Teacher B is given A's neighbour's size (24) while its graph is fixed at 16."""
    config = base_config(assets)
    config["teachers"][1]["preprocess"]["size"] = [24, 24]
    assert_bad_input(
        amalgamate(cli, tmp_path, config), "teachers[1].preprocess", "b.onnx", "dim 2 is 24, the graph fixes it to 16"
    )


def test_unknown_tap(cli, assets, tmp_path):
    config = base_config(assets)
    config["teachers"][0]["boundaries"] = ["relu99"]
    assert_bad_input(
        amalgamate(cli, tmp_path, config), "teachers[0].boundaries", "a.onnx", "'relu99'", "no such tensor"
    )


def test_boundary_not_on_the_main_path(cli, assets, tmp_path):
    model = onnx.load(assets / "residual.onnx")
    side = next(o for n in model.graph.node if n.op_type == "Conv" for o in n.output if not dominates_outputs(model, o))
    config = base_config(assets)
    config["teachers"][0].update(onnx=str(assets / "residual.onnx"), boundaries=[side])
    assert_bad_input(
        amalgamate(cli, tmp_path, config),
        "teachers[0].boundaries",
        "residual.onnx",
        "is not on the main path",
        "valid boundaries:",
    )


def test_op_no_converter_handles(cli, assets, tmp_path):
    """Refused while loading the teachers, before the (long) target pass."""
    config = base_config(assets)
    config["teachers"][1]["onnx"] = str(with_shrink_head(assets / "b.onnx", tmp_path / "shrink.onnx"))
    assert_bad_input(
        amalgamate(cli, tmp_path, config), "teachers[1]", "shrink.onnx", "ops no converter handles: Shrink"
    )
    assert not (tmp_path / "cache").exists()


def test_nan_in_teacher_outputs(cli, assets, tmp_path):
    model = onnx.load(assets / "b.onnx")
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = float("nan")
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, tmp_path / "nan.onnx")
    config = base_config(assets)
    config["teachers"][1]["onnx"] = str(tmp_path / "nan.onnx")
    assert_bad_input(amalgamate(cli, tmp_path, config), "nan.onnx", "'logits' has NaN or Inf values")
    left = [p for p in (tmp_path / "cache" / "targets").glob("nan-*") if p.suffix != ".lock"]
    assert not left, "no cache entry for the failed teacher (its lock file may stay)"


def test_inf_in_teacher_outputs(cli, assets, tmp_path):
    model = onnx.load(assets / "b.onnx")
    bias = next(i for i in model.graph.initializer if numpy_helper.to_array(i).shape == (5,))
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) * 0 + float("inf"), bias.name))
    onnx.save(model, tmp_path / "inf.onnx")
    config = base_config(assets)
    config["teachers"][1]["onnx"] = str(tmp_path / "inf.onnx")
    assert_bad_input(amalgamate(cli, tmp_path, config), "inf.onnx", "NaN or Inf")


def test_task_index_out_of_range(cli, assets, tmp_path):
    config = base_config(assets)
    config["teachers"][0]["tasks"][1]["index"] = 7
    assert_bad_input(
        amalgamate(cli, tmp_path, config),
        "a.onnx",
        "task 'a1' on output 'logits' of width 5",
        "index 7 is out of range",
    )


def test_task_reads_an_output_the_graph_lacks(cli, assets, tmp_path):
    config = base_config(assets)
    config["teachers"][0]["tasks"][0]["output"] = "scores"
    assert_bad_input(amalgamate(cli, tmp_path, config), "a.onnx", "'scores'", "outputs are ['logits']")
