"""Task metrics: agreement with a teacher, accuracy, F1 and average precision.

Binary tasks are decided at logit 0 (probability 0.5) unless a threshold is
given; multi-class tasks by argmax. F1 of a multi-class task is the macro F1.
Average precision is threshold-free: where students tie their teachers on F1, it
tells signal from noise.

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
