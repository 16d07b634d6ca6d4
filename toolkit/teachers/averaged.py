"""Teacher targets averaged over cheap augmented views (``training.teacher_views``).

MEAL V2's averaged soft outputs, as test-time augmentation of the teacher: a teacher
trained with flips and small shifts gives better targets averaged over them. A
teacher trained without them is wrong on those views, so each view is kept for a
teacher only where the teacher agrees with itself: its *self-agreement*, the share
of held-out images (the unlabeled train split's held-out part) on which the view
gives the same decision as the plain image (binary: logit above 0; multiclass:
argmax), mean over the teacher's chosen tasks, must reach ``training.view_agreement``.

Averaging: binary tasks average probabilities (sigmoid) and go back to a logit;
multiclass tasks average softmax probabilities and go back to log-probabilities.

>>> z = np.array([[-2.0, 1.0], [2.0, 3.0]])
>>> self_agreement("binary", z[0], z[1])
0.5
>>> average("binary", [np.array([0.0, 2.0]), np.array([0.0, 2.0])]).round(4).tolist()
[0.0, 2.0]
"""

import numpy as np

EPS = 1e-7


def decisions(kind, logits):
    logits = np.asarray(logits)
    return logits > 0 if kind == "binary" else logits.argmax(axis=-1)


def self_agreement(kind, plain, viewed):
    """Share of rows whose decision on the view equals the one on the plain image."""
    return float(np.mean(decisions(kind, plain) == decisions(kind, viewed)))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def average(kind, logits):
    """One task's logits averaged over views (a list of (n, ...) arrays) in probability."""
    z = np.stack([np.asarray(x, dtype=np.float64) for x in logits])
    if kind == "binary":
        p = np.clip((1.0 / (1.0 + np.exp(-z))).mean(axis=0), EPS, 1 - EPS)
        return np.log(p / (1 - p)).astype(np.float32)
    return np.log(np.clip(_softmax(z).mean(axis=0), EPS, None)).astype(np.float32)


def teacher_agreement(tasks, plain, viewed, rows):
    """A teacher's self-agreement on ``rows``: mean over its tasks (TaskSpecs with
    ``name`` and ``kind``); ``plain`` / ``viewed``: ``{task: logits}``."""
    return float(np.mean([self_agreement(t.kind, np.asarray(plain[t.name][rows]), np.asarray(viewed[t.name][rows]))
                          for t in tasks]))


def averaged_targets(tasks, plain, views, rows, minimum):
    """``(targets, record)`` of one teacher: ``targets[task]`` averaged over the plain
    view and every view in ``views`` (``{view name: {task: logits}}``) whose
    self-agreement on the held-out ``rows`` is at least ``minimum``; ``record[view]``
    holds ``agreement`` (rounded to 4 places) and ``kept``."""
    record = {}
    for name, viewed in views.items():
        score = teacher_agreement(tasks, plain, viewed, rows)
        record[name] = {"agreement": round(score, 4), "kept": score >= minimum}
    kept = [views[name] for name in views if record[name]["kept"]]
    if not kept:
        return {t.name: plain[t.name] for t in tasks}, record
    return {t.name: average(t.kind, [plain[t.name]] + [v[t.name] for v in kept]) for t in tasks}, record
