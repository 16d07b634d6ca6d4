"""Teacher targets averaged over cheap augmented views (``training.teacher_views``).

MEAL V2's averaged soft outputs, as test-time augmentation of the teacher: a teacher
trained with flips and small shifts gives better targets averaged over them. A
teacher trained without them is wrong on those views, so each view is kept for a
teacher only where the teacher agrees with itself, measured on the held-out images
(the unlabeled train split's held-out part) between its decisions on the plain image
and on the view (binary: logit above 0; multiclass: argmax):

* ``agreement``: the share of equal decisions, mean over the teacher's chosen tasks;
* ``kappa``: the same corrected for chance (Cohen's kappa), mean over its tasks. This
  one decides (``training.view_agreement``): a binary task with 10% positives scores
  a raw agreement of 0.90 with a view that misses every positive (the FM demo's
  sneaker teacher under hflip: agreement 0.896, kappa 0.036).

Averaging: binary tasks average probabilities (sigmoid) and go back to a logit;
multiclass tasks average softmax probabilities and go back to log-probabilities.

>>> z = np.array([[-2.0, 1.0, -1.0, 3.0], [2.0, 3.0, -1.0, 1.0]])
>>> self_agreement("binary", z[0], z[1]), round(chance_corrected("binary", z[0], z[1]), 4)
(0.75, 0.5)
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


def chance_corrected(kind, plain, viewed):
    """Cohen's kappa of the two decisions: 1 for the same decisions, 0 for agreement by chance."""
    a, b = (decisions(kind, x).astype(np.int64) for x in (plain, viewed))
    classes = int(max(a.max(), b.max())) + 1
    by_chance = float(np.dot(np.bincount(a, minlength=classes), np.bincount(b, minlength=classes))) / len(a) ** 2
    observed = float(np.mean(a == b))
    return 1.0 if by_chance >= 1 else (observed - by_chance) / (1 - by_chance)


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
    """A teacher's ``{"agreement", "kappa"}`` on ``rows`` (each the mean over its tasks,
    TaskSpecs with ``name`` and ``kind``, rounded to 4 places); ``plain`` / ``viewed``: ``{task: logits}``."""
    pairs = [(t.kind, np.asarray(plain[t.name][rows]), np.asarray(viewed[t.name][rows])) for t in tasks]
    return {
        "agreement": round(float(np.mean([self_agreement(*p) for p in pairs])), 4),
        "kappa": round(float(np.mean([chance_corrected(*p) for p in pairs])), 4),
    }


def kept_views(tasks, plain, views, rows, minimum):
    """``(kept, record)`` of one teacher: the names of the views in ``views`` (``{view
    name: {task: logits}}``) whose kappa on the held-out ``rows`` is at least ``minimum``;
    ``record[view]`` holds ``agreement``, ``kappa`` and ``kept``."""
    record = {}
    for name, viewed in views.items():
        score = teacher_agreement(tasks, plain, viewed, rows)
        record[name] = {**score, "kept": score["kappa"] >= minimum}
    return [name for name in views if record[name]["kept"]], record


def log_views(log, views, minimum):
    """One line per view a teacher drops (its self-agreement's kappa under ``minimum``),
    one for those it keeps, and the ``views`` event with every self-agreement."""
    if not views:
        return
    for teacher, found in views.items():
        for view, r in found.items():
            if not r["kept"]:
                log.say(
                    f"teacher views: {teacher} drops {view}: self-agreement kappa {r['kappa']:.4f} "
                    f"(agreement {r['agreement']:.4f}) on the held-out split, under "
                    f"training.view_agreement {minimum}"
                )
        kept = [f"{view} (kappa {r['kappa']:.4f})" for view, r in found.items() if r["kept"]]
        if kept:
            log.say(f"teacher views: {teacher}'s targets averaged over the plain view and {', '.join(kept)}")
    log.write("views", teachers=views, minimum=minimum)
