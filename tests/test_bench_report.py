"""`make bench`'s report half (samples/bench_report.py): the issue targets measured from a
bench.json, the sample std over seeds, and bench.md / bench.png written from it."""

import doctest

import numpy as np
import pytest

import samples.bench_report as bench_report
from samples.bench_report import report, sample_std, targets

SEEDS = {
    "student": [0.8388, 0.8385, 0.8390],
    "teachers": [0.8274, 0.8270, 0.8274],
    "kd": [0.8279, 0.8335, 0.8301],
    "student_w1": [0.8369, 0.8378, 0.8377],
    "student_w05": [0.8323, 0.8283, 0.8323],
}
REAL = {"student": [0.7491, 0.7525, 0.7513], "kd": [0.7344, 0.7336, 0.7327], "teachers": [0.7205, 0.7187, 0.7196]}


def bench(f1_seeds=SEEDS, real=REAL):
    return {
        "amalgamation": {"cached_s": 20.0, "eager_teachers_s": 30.0, "irreducible_s": 15.0},
        "latency_ms": {
            "student_b1": 0.1,
            "student_b64": 1.6,
            "teachers_b1": 0.2,
            "teachers_b64": 3.4,
            "student_torch_b64": 7.0,
            "student_int8_b64": 2.5,
        },
        "size_bytes": {"student": 240_000, "teachers": 810_000, "student_int8": 82_000},
        "f1": {k: float(np.mean(v)) for k, v in f1_seeds.items()},
        "params_ratio": 0.42,
        "params_ratio_largest": 0.84,
        "real_archs": real
        and {"f1": {k: float(np.mean(v)) for k, v in real.items()}, "params_ratio": 0.53, "params_ratio_largest": 0.64},
        "meta": {
            "seeds": [0, 1, 2],
            "f1_seeds": f1_seeds,
            "f1_spread": {k: max(v) - min(v) for k, v in f1_seeds.items()},
            "f1_std": {k: sample_std(v) for k, v in f1_seeds.items()},
            "real_archs_f1_seeds": real,
            "real_archs_f1_std": real and {k: sample_std(v) for k, v in real.items()},
        },
    }


def test_the_module_doctests_pass():
    assert doctest.testmod(bench_report).failed == 0


def test_sample_std_is_the_n_minus_1_one_and_zero_for_one_seed():
    assert sample_std([0.8279, 0.8335, 0.8301]) == pytest.approx(np.std([0.8279, 0.8335, 0.8301], ddof=1))
    assert sample_std([0.83]) == 0.0


def test_each_target_is_measured_against_its_bound():
    found = targets(bench())
    assert found["f1_student_minus_teachers"]["value"] == pytest.approx(1.15, abs=0.01)
    assert found["f1_student_minus_teachers"]["met"] and found["f1_student_minus_kd"]["met"]
    assert found["f1_w1_minus_w05"]["value"] == pytest.approx(0.65, abs=0.01) and found["f1_w1_minus_w05"]["met"]
    assert found["latency_b1"] == {"value": 0.5, "unit": "x", "target": "<= 0.6", "met": True}
    assert not found["eager_over_cached"]["met"] and not found["cached_over_irreducible"]["met"]
    assert not found["int8_over_fp32_b64"]["met"]
    assert found["real_archs_f1_student_minus_kd"]["met"] and found["real_archs_params_ratio_largest"]["met"]


def test_a_student_below_its_bound_is_missed_and_an_unmeasured_target_is_left_out():
    weak = {**SEEDS, "student": [0.8300, 0.8301, 0.8302]}  # +0.28 pt over the teachers, below KD
    found = targets(bench({k: v for k, v in weak.items() if k != "student_w1"}, real=None))
    assert not found["f1_student_minus_teachers"]["met"] and not found["f1_student_minus_kd"]["met"]
    assert "f1_w1_minus_w05" not in found and not any(name.startswith("real_archs") for name in found)


def test_the_report_writes_the_tables_and_the_plot(tmp_path, capsys):
    b = bench()
    b["targets"] = targets(b)
    report(b, tmp_path)
    md = (tmp_path / "bench.md").read_text()
    assert "| layer-wise student (ours) | 0.8388 | 0.0003 | 0.8385-0.8390 | 0.8388 / 0.8385 / 0.8390 |" in md
    assert "| multi-teacher KD | 0.8305 | 0.0028 |" in md
    assert "| kd | 0.7336 | 0.0009 | 0.7344 / 0.7336 / 0.7327 |" in md
    assert "| eager_over_cached | 1.50x | >= 2 | MISSED |" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "target f1_student_minus_kd" in capsys.readouterr().out


def _run(student, teachers, worst, margin, kd=None):
    row = {"student": {"f1": student, "teachers_f1": teachers, "worst_task": worst, "worst_margin": margin}}
    if kd:
        row["kd"] = {"f1": kd[0], "teachers_f1": teachers, "worst_task": kd[1], "worst_margin": kd[2]}
    return row


def test_the_worst_task_grid_is_a_target_and_a_table(tmp_path, capsys):
    """bench.json's worst-task grid (samples/sweep.py per sample): each run's worst task, the
    lowest over the grid against its bound, and the lowest student - KD of any run."""
    b = bench()
    fm = {
        "seed0-threads1": _run(0.8382, 0.8274, "tshirt", 0.02, kd=(0.8317, "tshirt", -0.45)),
        "seed0-threads2": _run(0.8388, 0.8274, "pullover", -0.07, kd=(0.8350, "coat", -0.20)),
    }
    real = {"seed0-threads1": _run(0.7570, 0.7250, "pullover", -1.27, kd=(0.7400, "tshirt", -0.60))}
    b["meta"]["runs"] = {"fm": fm, "real_archs": real}
    b["f1_min_margin"] = {"fm": {"student": -0.07, "kd": -0.45}, "real_archs": {"student": -1.27, "kd": -0.60}}
    b["f1_mean_margin_min"] = {"fm": {"student": 1.08, "kd": 0.43}, "real_archs": {"student": 3.2, "kd": 1.5}}
    found = targets(b)
    assert found["fm_worst_task"] == {"value": -0.07, "unit": "pt", "target": ">= -0.3", "met": True}
    assert (
        found["fm_student_minus_kd_every_run"]["value"] == pytest.approx(0.38)
        and not found["fm_student_minus_kd_every_run"]["met"]
    )
    assert not found["real_archs_worst_task"]["met"] and found["real_archs_mean_margin"]["met"]
    b["targets"] = found
    report(b, tmp_path)
    md = (tmp_path / "bench.md").read_text()
    assert "| seed0-threads2 | 0.8274 | 0.8388 | pullover | -0.07 | 0.8350 | coat | -0.20 |" in md
    assert "worst task over the grid: student -1.27 pt, kd -0.60 pt" in md
    assert "| real_archs_worst_task | -1.27pt | >= -0.5 | MISSED |" in md


def test_the_vit_sample_gets_its_own_rows_and_targets(tmp_path, capsys):
    """samples/vit_cnn in bench.json (issue 26): its F1 over the seeds, params, and its targets
    against its own bounds (worst task >= -0.5 pt, the mean >= the teachers and >= KD)."""
    b = bench()
    vit = {"student": [0.7939, 0.7901, 0.7920], "kd": [0.7901, 0.7910, 0.7890], "teachers": [0.7843] * 3}
    b["vit_cnn"] = {
        "f1": {k: float(np.mean(v)) for k, v in vit.items()},
        "params_ratio": 0.56,
        "params_ratio_largest": 0.9,
    }
    b["meta"].update(vit_cnn_f1_seeds=vit, vit_cnn_f1_std={k: sample_std(v) for k, v in vit.items()})
    runs = {
        f"seed{s}-threads1": _run(vit["student"][s], 0.7843, "pullover", -0.23, kd=(vit["kd"][s], "coat", -0.4))
        for s in range(3)
    }
    b["meta"]["runs"] = {"vit_cnn": runs}
    b["f1_min_margin"] = {"vit_cnn": {"student": -0.23, "kd": -0.4}}
    b["f1_mean_margin_min"] = {"vit_cnn": {"student": 0.58, "kd": 0.47}}
    found = targets(b)
    assert found["vit_cnn_worst_task"]["met"] and found["vit_cnn_params_ratio"]["met"]
    assert (
        found["vit_cnn_student_minus_kd_every_run"]["value"] == pytest.approx(-0.09)
        and not found["vit_cnn_student_minus_kd_every_run"]["met"]
    )
    b["targets"] = found
    report(b, tmp_path)
    md = (tmp_path / "bench.md").read_text()
    assert "vit_cnn, 3 seeds:" in md and "vit_cnn params: 0.56x both teachers" in md
    assert "vit_cnn: every chosen task against its own teacher" in md
