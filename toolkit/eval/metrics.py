"""Task metrics: agreement with a teacher, accuracy, F1 and average precision.

Binary tasks are decided at logit 0 (probability 0.5) unless a threshold is
given; multi-class tasks by argmax. F1 of a multi-class task is the macro F1.
Average precision is threshold-free: where students tie their teachers on F1, it
tells signal from noise. Without labels, :func:`expected_f1` scores decisions against
a teacher's probabilities taken as soft labels. :func:`margin_interval` puts a paired
bootstrap interval around a model's F1 minus its teacher's, so that a task's loss can be
told from the noise of the evaluation set.

>>> import numpy as np
>>> f1(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
0.6666666666666666
"""

import numpy as np


def decide(kind, logits, threshold=0.0):
    logits = np.asarray(logits)
    return (logits > threshold).astype(np.int64) if kind == "binary" else logits.argmax(axis=-1)


def agreement(kind, student_logits, teacher_logits):
    return float(np.mean(decide(kind, student_logits) == decide(kind, teacher_logits)))


def f1(labels, predictions):
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    tp = np.sum(labels & predictions)
    denom = 2 * tp + np.sum(labels & ~predictions) + np.sum(~labels & predictions)
    return float(2 * tp / denom) if denom else 1.0


def macro_f1(labels, predictions):
    classes = np.unique(np.concatenate([labels, predictions]))
    return float(np.mean([f1(labels == c, predictions == c) for c in classes]))


ROUNDS = 1000  # bootstrap resamples of the evaluation rows
CHUNK = 16384  # rows drawn at a time: memory stays ROUNDS x CHUNK floats, whatever the data's size


def margin_interval(labels, predictions, teacher_predictions, level=0.95, rounds=ROUNDS, seed=0):
    """The ``level`` interval of ``F1(predictions) - F1(teacher_predictions)`` over paired
    bootstrap resamples of the rows (Poisson(1) weights per row, the same rows for both; a
    multi-class task's macro F1 over the classes either side predicts or holds), as ``[lo, hi]``.

    >>> y = np.array([1, 0] * 500)
    >>> margin_interval(y, y, y)
    [0.0, 0.0]
    >>> lo, hi = margin_interval(y, y, np.where(np.arange(1000) % 4 == 0, 1 - y, y))
    >>> 0 < lo < hi
    True
    """
    labels, decided = np.asarray(labels), (np.asarray(predictions), np.asarray(teacher_predictions))
    classes = np.unique(np.concatenate([labels, *decided]))
    classes = np.array([1]) if set(classes.tolist()) <= {0, 1} else classes
    rng = np.random.default_rng(seed)
    counts = np.zeros((2, 3, rounds, len(classes)))  # (model, teacher) x (tp, fp, fn) per resample and class
    for start in range(0, len(labels), CHUNK):
        rows = slice(start, start + CHUNK)
        weights = rng.poisson(1.0, (rounds, len(labels[rows]))).astype(np.float32)
        truth = (labels[rows, None] == classes).astype(np.float32)
        for who, pred in enumerate(decided):
            said = (pred[rows, None] == classes).astype(np.float32)
            counts[who] += [weights @ (truth * said), weights @ ((1 - truth) * said), weights @ (truth * (1 - said))]
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denom = 2 * tp + fp + fn
    f1s = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 1.0).mean(axis=-1)
    tail = 100 * (1 - level) / 2
    diff = f1s[0] - f1s[1]
    return [float(np.percentile(diff, tail)), float(np.percentile(diff, 100 - tail))]


def average_precision(labels, scores):
    """Area under the precision-recall curve, step-wise (as scikit-learn computes it)."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


def task_metrics(kind, logits, labels, threshold=0.0):
    """accuracy, f1 (and ap for binary tasks) of one task's logits against labels, a binary
    task decided at logit ``threshold``."""
    predictions = decide(kind, logits, threshold)
    labels = np.asarray(labels)
    out = {"accuracy": float(np.mean(predictions == labels))}
    if kind == "binary":
        out["f1"] = f1(labels, predictions)
        out["ap"] = average_precision(labels, logits)
    else:
        out["f1"] = macro_f1(labels, predictions)
    return out


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _soft_f1(p, d):
    """F1 of decisions ``d`` (0/1) against soft labels ``p`` (each row positive with probability p)."""
    denom = np.sum(d) + np.sum(p)
    return float(2 * np.sum(p * d) / denom) if denom else 1.0


def expected_f1(kind, logits, judge_logits, threshold=0.0):
    """F1 of ``logits``' decisions expected under the judge's probabilities (ours): each row
    is positive with the judge's probability ``sigmoid(z)`` (a multi-class task: each class
    with its softmax share, macro F1). No labels: under a calibrated judge it is the F1
    the decisions would get on average; a judge's own decisions score its best guess of
    its own F1. The held-out margin of a task is a student's expected F1 minus its
    teacher's, both judged by that teacher.

    >>> judge = np.array([4.0, 4.0, -4.0, -4.0])
    >>> round(expected_f1("binary", judge, judge), 3), round(expected_f1("binary", np.array([4.0, -4, -4, -4]), judge), 3)
    (0.982, 0.655)
    """
    z = np.asarray(judge_logits, dtype=np.float64)
    d = decide(kind, logits, threshold)
    if kind == "binary":
        return _soft_f1(1.0 / (1.0 + np.exp(-z)), d)
    p = _softmax(z)
    return float(np.mean([_soft_f1(p[:, c], d == c) for c in range(p.shape[-1])]))


def kl_from_teacher(kind, logits, teacher_logits):
    """Mean KL divergence (nats) from the teacher's distribution to the model's, per row: 0 when
    they agree to the last probability (the excess loss of toolkit.method.losses, in numpy).

    >>> round(kl_from_teacher("binary", np.array([0.0, 2.0]), np.array([0.0, 2.0])), 6)
    0.0
    >>> round(kl_from_teacher("binary", np.array([0.0]), np.array([2.0])), 4)
    0.3278
    """
    z, t = np.asarray(logits, np.float64), np.asarray(teacher_logits, np.float64)
    if kind == "binary":
        eps = 1e-6
        p = np.clip(1 / (1 + np.exp(-t)), eps, 1 - eps)
        q = np.clip(1 / (1 + np.exp(-z)), eps, 1 - eps)
        return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))
    log_p = np.log(_softmax(t))
    log_q = np.log(_softmax(z))
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))
