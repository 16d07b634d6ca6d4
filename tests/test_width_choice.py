"""``student.width: auto``: the widest trunk whose most shared student fits the size limit.

Teacher A (the trunk's reference) is much larger than teacher B, so the full-width
student (A's trunk plus B's branch) is over ``max_vs_largest`` 1.0 x A: no branch
point can bring it under, and ``auto`` narrows the trunk: from He init (``init: auto``,
the default) or from A's pruned weights (``init: teacher``).
"""

import json

import numpy as np
import pytest
import torch

from amalgam.toolkit.config import load_config
from amalgam.toolkit.method.amalgamate import amalgamate
from amalgam.toolkit.method.branching import size_limit, teacher_sizes
from amalgam.toolkit.method.width_choice import WIDTHS, choose_width, init_at, smallest_student_params
from amalgam.toolkit.student.io import load_student
from amalgam.toolkit.student.parts import trunk_blocks, trunk_graphs
from amalgam.toolkit.student.targetnet import count_params
from amalgam.toolkit.teachers import load_teachers
from tests.builders import PlainCNN, export, randomize_bn
from tests.robustness.contract import base_config, write_config
from tests.synthetic import SIZE, make_images, save_npz


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("width_choice")
    export(
        randomize_bn(PlainCNN(channels=(16, 32, 64, 64), n_out=5)),
        root / "a.onnx",
        input_shape=(2, 1, SIZE, SIZE),
        opset=17,
        dynamo=False,
    )
    export(
        randomize_bn(PlainCNN(channels=(8, 8, 8, 8), n_out=5), seed=1),
        root / "b.onnx",
        input_shape=(2, 1, SIZE, SIZE),
        opset=17,
        dynamo=False,
    )
    save_npz(root / "train.npz", *make_images(400, seed=2))
    return root


def chosen(tmp_path, assets, student=None, branching=None):
    config = base_config(assets)
    config["student"] = {"reference": "A", **(student or {})}
    config["branching"] = branching or {}
    config = load_config(write_config(tmp_path, config))
    teachers = load_teachers(config)
    reference = teachers[0]
    sizes = teacher_sizes(teachers)
    x = torch.zeros(1, 1, SIZE, SIZE)
    choice = choose_width(config.student, config.branching, trunk_graphs(reference), teachers, reference, sizes, x)

    def params_at(w):
        init = init_at(config.student.init, w)
        blocks = trunk_blocks(trunk_graphs(reference), init, w, 0)
        return smallest_student_params(blocks, teachers, reference, init, config.student.gate_reduction, x)

    return choice.width, choice.init, choice.params, choice.limit, params_at, sizes


def test_auto_takes_the_widest_width_within_the_default_limit(tmp_path, assets):
    width, init, params, limit, params_at, sizes = chosen(tmp_path, assets)
    assert limit == pytest.approx(min(0.6 * sum(sizes.values()), max(sizes.values())))
    assert params_at(1.0) > limit  # the full-width student breaks the bound
    assert width < 1.0 and init == "random"  # init auto: He init for a narrowed trunk
    assert params == params_at(width) <= limit
    wider = WIDTHS[WIDTHS.index(width) - 1]
    assert params_at(wider) > limit  # the widest that fits


def test_a_narrowed_trunk_of_init_teacher_starts_from_the_pruned_weights(tmp_path, assets):
    width, init, params, limit, params_at, _ = chosen(tmp_path, assets, student={"init": "teacher"})
    assert width < 1.0 and init == "pruned"
    assert params == params_at(width) <= limit


def test_auto_keeps_full_width_and_the_teachers_weights_without_a_bound(tmp_path, assets):
    width, init, params, limit, params_at, _ = chosen(
        tmp_path, assets, branching={"size_budget": None, "max_vs_largest": None}
    )
    assert (width, init, limit) == (1.0, "teacher", None) and params == params_at(1.0)


@pytest.mark.parametrize("init", ["auto", "teacher"])
def test_the_choice_hands_over_its_trunk_as_built_fresh_at_that_width(tmp_path, assets, init):
    """The candidates are built (He init, or pruned) from one conversion of the graphs: each from
    its own copy, so the blocks handed to the run equal a fresh build at the chosen width,
    weights and outputs."""
    config = base_config(assets)
    config["student"] = {"reference": "A", "init": init}
    config = load_config(write_config(tmp_path, config))
    teachers = load_teachers(config)
    graphs = trunk_graphs(teachers[0])
    x = torch.rand(3, 1, SIZE, SIZE)
    choice = choose_width(config.student, config.branching, graphs, teachers, teachers[0], teacher_sizes(teachers), x)
    fresh = trunk_blocks(graphs, choice.init, choice.width, 0)
    assert choice.width < WIDTHS[1]  # a narrowed candidate (0.875) came before it
    for kept, built in zip(choice.blocks, fresh, strict=True):
        assert count_params(kept) == count_params(built)
        for a, b in zip(kept.state_dict().values(), built.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)
    with torch.no_grad():
        h, g = x, x
        for kept, built in zip(choice.blocks, fresh):
            h, g = kept.eval()(h), built.eval()(g)
    torch.testing.assert_close(h, g)


def test_a_number_is_taken_as_given(tmp_path, assets):
    width, init, *_ = chosen(tmp_path, assets, student={"init": "random", "width": 0.5})
    assert (width, init) == (0.5, "random")


def test_a_bound_no_width_meets_takes_the_narrowest(tmp_path, assets):
    width, init, params, limit, *_ = chosen(tmp_path, assets, branching={"size_budget": 0.01})
    assert width == WIDTHS[-1] and params > limit


def test_the_run_records_the_width_and_builds_the_trunk_at_it(tmp_path, assets):
    config = load_config(write_config(tmp_path, base_config(assets)))
    amalgamate(config, out=tmp_path / "run", quiet=True, cache_root=tmp_path / "cache")
    branches = json.loads((tmp_path / "run" / "branches.json").read_text())
    assert branches["width"] < 1.0 and branches["init"] == "random"
    assert branches["budget_met"] and branches["params"] <= size_limit(branches["teachers_params"], 0.6, 1.0)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["width"] for r in records if r["event"] == "width"] == [branches["width"]]
    student, _ = load_student(tmp_path / "run" / "student")
    convs = [m for m in student.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].out_channels < 64
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["params"]["ratio_largest"] <= 1.0 and np.isfinite(metrics["summary"]["student"]["agreement"])
    by_teacher = metrics["holdout_by_teacher"]["student"]  # how a user compares two inits without labels
    for teacher in ("A", "B"):
        rows = [r["student"]["agreement"] for r in metrics["holdout"] if r["teacher_name"] == teacher]
        assert rows and by_teacher[teacher] == pytest.approx(np.mean(rows), abs=1e-6)
