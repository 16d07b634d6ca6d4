"""Decision thresholds set on held-out logits without labels (evaluation.threshold)."""

import numpy as np

from amalgam.toolkit.eval.metrics import task_metrics
from amalgam.toolkit.eval.thresholds import decision_thresholds, rate_threshold, teacher_rate


def test_calibrated_threshold_matches_the_teachers_mean_probability():
    rng = np.random.default_rng(0)
    teacher = rng.normal(-1.0, 2.0, 5000)  # a teacher that fires on ~1/3 of the samples, unsure of many
    student = 0.5 * teacher + rng.normal(0, 0.3, 5000) - 0.4  # shrunk, shifted: too few positives at logit 0
    kinds = {"t": "binary", "m": "multiclass"}
    found = decision_thresholds("calibrated", {"t": student, "m": None}, {"t": teacher, "m": None}, kinds)
    assert set(found) == {"t"}
    rate = float(np.mean(student > found["t"]))
    assert abs(rate - teacher_rate(teacher)) < 1e-3
    assert np.mean(student > 0) < rate - 0.05  # logit 0 would have under-fired
    assert decision_thresholds("logit0", {"t": student, "m": None}, {"t": teacher, "m": None}, kinds) == {"t": 0.0}


def test_a_calibrated_student_recovers_f1_lost_to_a_shifted_logit():
    rng = np.random.default_rng(1)
    labels = rng.random(4000) < 0.2
    teacher = np.where(labels, 2.0, -2.0) + rng.normal(0, 1.0, 4000)
    student = teacher - 2.5  # same ranking, fires far too rarely at logit 0
    at0 = task_metrics("binary", student, labels)["f1"]
    threshold = rate_threshold(student, teacher_rate(teacher))
    calibrated = task_metrics("binary", student, labels, threshold)["f1"]
    teacher_calibrated = task_metrics("binary", teacher, labels, rate_threshold(teacher, teacher_rate(teacher)))
    assert calibrated > at0 + 0.3
    assert abs(calibrated - teacher_calibrated["f1"]) < 1e-3  # same ranking, same rule: same decisions


def test_rate_threshold_clips_the_rate():
    z = np.array([-1.0, 0.0, 1.0])
    assert np.mean(z > rate_threshold(z, 1.5)) == 2 / 3 and np.mean(z > rate_threshold(z, -0.1)) == 0
