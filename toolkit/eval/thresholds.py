"""Per-task decision thresholds set on the held-out split, without labels (``evaluation.threshold``).

* ``logit0``: every binary task decided at logit 0 (probability 0.5);
* ``calibrated`` (ours, METHOD.md round 4; distribution alignment in ReMixMatch's
  sense): a binary task's threshold is the logit at which a model's positive rate
  on the held-out split equals the teachers' mean probability there,
  ``mean(sigmoid(z_T))``. A teacher that rarely fires on a task (its probabilities
  hover under 0.5) is then still counted at its expected rate.

The student, the KD baseline and the teachers are each calibrated by the same rule,
on their own held-out logits, so their F1 compare fairly. Multiclass tasks keep
the argmax.

>>> import numpy as np
>>> z = np.array([-3.0, -1.0, -0.5, 0.2, 2.0])
>>> rate_threshold(z, 0.4)  # 2 of 5 above it
-0.22
"""

import numpy as np

from amalgam.toolkit.student.infer import predict

RULES = ("logit0", "calibrated")


def teacher_rate(teacher_logits):
    """The teacher's mean probability of the positive class."""
    z = np.asarray(teacher_logits, dtype=np.float64)
    return float(np.mean(1.0 / (1.0 + np.exp(-z))))


def rate_threshold(logits, rate):
    """The logit threshold at which ``mean(logits > t)`` is ``rate`` (a quantile)."""
    rate = min(max(rate, 0.0), 1.0)
    return round(float(np.quantile(np.asarray(logits, dtype=np.float64), 1.0 - rate)), 6)


def decision_thresholds(rule, logits, teacher_logits, kinds):
    """``{task: logit threshold}`` for the binary tasks under ``rule``.

    ``logits`` and ``teacher_logits``: ``{task: held-out logits}`` of the model being
    calibrated and of the task's teacher; ``kinds``: ``{task: "binary" | "multiclass"}``."""
    binary = [t for t in logits if kinds[t] == "binary"]
    if rule == "logit0":
        return {t: 0.0 for t in binary}
    return {t: rate_threshold(logits[t], teacher_rate(teacher_logits[t])) for t in binary}


def net_thresholds(rule, net, data, indices, kinds):
    """A trained net's thresholds, from its and its teachers' logits on the held-out rows ``indices``."""
    logits = predict(net, data.inputs, indices)
    return decision_thresholds(rule, logits, {t: np.asarray(data.plain_logits[t])[indices] for t in logits}, kinds)


def teacher_thresholds(rule, data, indices, kinds):
    """The teachers' own thresholds under the same rule, on the same held-out rows."""
    logits = {t: np.asarray(data.plain_logits[t])[indices] for t in kinds}
    return decision_thresholds(rule, logits, logits, kinds)
