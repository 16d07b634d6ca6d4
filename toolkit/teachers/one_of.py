"""Targets reconciled across teachers whose tasks are the classes of one label (``data.one_of``).

Teachers trained on disjoint class sets each answer "is it my class k?" without
knowing the other teachers' classes: teacher B says "shirt" with probability 0.6 on an
image that teacher A calls a T-shirt with 0.9. When the config declares that a group
of binary tasks, chosen or not, are all the classes of one label (each image is
exactly one of them), the group's probabilities should sum to 1 on every image, and
each task's target is its teacher's probability divided by the group's sum
(``data.one_of_rule``):

* ``exact``: ``q_k = p_k / sum_j p_j`` on every image, the simplest case of unifying
  heterogeneous classifiers (Vongkulbhisal et al., "Unifying Heterogeneous Classifiers
  with Distillation", CVPR 2019), which treats each teacher's output as the union
  distribution conditioned on its own classes: a teacher claims its class when the
  image is of it, so a sum under 1 is spread over the classes in proportion.
* ``at_most``: where the sum exceeds 1, ``q_k = p_k / sum_j p_j``; elsewhere
  ``q_k = p_k``. Probabilities over 1 in all say that a teacher claims an image that is
  another's; under 1, that some teacher misses one, and nothing is raised.
* ``auto`` (the default): ``exact`` when every class of the group *fires*, else
  ``at_most`` (:func:`settle_rule`). A class fires when its teacher decides at least
  :data:`FIRES` of its mean probability positive at 0.5, on the held-out split: a
  teacher that decides far fewer positives than its probabilities add up to spreads
  that class thinly over many images and under-claims the images that are of it, so
  spreading an under-claimed image over the other classes hands them its images.

(``p_j = sigmoid(z_j)``, ``j`` over every task of the group.) Measured: on real_archs,
MobileNetV2 decides 4% shirts at 0.5 against a mean probability of 11% (0.39 of it;
every class of the Fashion-MNIST sample fires, 0.93 or more), and ``exact`` hands those
shirts to ResNet-18's classes. The targets' F1 against the teachers' own, on labeled
training rows no teacher trained on (``samples/measure_one_of.py``): Fashion-MNIST
``exact`` +0.87 pt on the mean, every task +0.04 or more, ``at_most`` +0.36;
real_archs ``exact`` +1.10 on the mean but pullover -1.71, ``at_most`` +0.79, every
task +0.01 or more. The student learns ``logit(q_k)``; evaluation still compares with
the teachers' own outputs. Unchosen tasks of a group take part through their teachers'
logits (one more output of the same pass) and are not learned.

>>> z = {"a": np.array([2.0, -3.0, 0.0]), "b": np.array([2.0, -9.0, -5.0]), "c": np.array([-9.0, 3.0, -5.0])}
>>> p = lambda q: np.round(1 / (1 + np.exp(-q.astype(float))), 3).tolist()
>>> p(reconcile(["a", "b", "c"], z, rule="exact")["a"])  # a and b both sure: 0.5 each; a unsure alone: raised
[0.5, 0.047, 0.974]
>>> p(reconcile(["a", "b", "c"], z)["a"])  # at_most: the unsure image is left as it is
[0.5, 0.047, 0.5]
"""

import numpy as np

EPS = 1e-7
ROWS = 65536  # rows reconciled at a time
FIRES = 0.8  # a class fires when its teacher's positive share at 0.5 is at least this share of its mean probability


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _reconcile_rows(z, rule):
    """``logit(q)`` of (rows, group) logits ``z``: each row's probabilities divided by their sum
    (``exact``), or by their sum where it exceeds 1 (``at_most``)."""
    log_p = _log_sigmoid(z.astype(np.float64))
    log_sum = np.logaddexp.reduce(log_p, axis=1, keepdims=True)
    log_q = log_p - (log_sum if rule == "exact" else np.maximum(log_sum, 0.0))
    q = np.clip(np.exp(log_q), EPS, 1 - EPS)
    return np.log(q / (1 - q)).astype(np.float32)


def reconcile(group, logits, keep=None, rule="at_most"):
    """``{task: reconciled logits}`` for the tasks of ``group`` in ``keep`` (default: all),
    from ``logits[task]`` ((n,) binary logits) of every task of the group, by ``rule``
    (``data.one_of_rule``)."""
    keep = list(group if keep is None else keep)
    n = len(logits[group[0]])
    out = {task: np.empty(n, np.float32) for task in keep}
    cols = [group.index(task) for task in keep]
    for start in range(0, n, ROWS):
        z = np.stack([np.asarray(logits[task][start : start + ROWS]) for task in group], axis=1)
        q = _reconcile_rows(z, rule)
        for task, col in zip(keep, cols):
            out[task][start : start + ROWS] = q[:, col]
    return out


def firing(group, logits, rows):
    """``{task: share of positive decisions at probability 0.5 / mean probability}`` of each task
    of ``group`` on ``rows``, rounded (1 for a teacher whose decisions add up to its probabilities)."""
    out = {}
    for task in group:
        z = np.asarray(logits[task][rows], np.float64)
        mean = float(np.mean(1 / (1 + np.exp(-z))))
        out[task] = round(float(np.mean(z > 0)) / mean, 4) if mean > 0 else 1.0
    return out


def settle_rule(rule, group, logits, rows):
    """(the rule ``rule`` is for this group, its classes' :func:`firing` ratios): ``auto`` is
    ``exact`` when every ratio is at least :data:`FIRES`, else ``at_most``.

    >>> z = {"a": np.array([3.0, -3.0, -3.0, -3.0]), "b": np.array([-3.0, -0.4, -0.4, -0.4])}
    >>> settle_rule("auto", ["a", "b"], z, np.arange(4))  # b never fires, its probabilities add up to 1.2
    ('at_most', {'a': 0.9134, 'b': 0.0})
    >>> settle_rule("auto", ["a", "b"], {**z, "b": -z["a"]}, np.arange(4))[0]  # both decide as their probabilities add up
    'exact'
    >>> settle_rule("at_most", ["a", "b"], {**z, "b": -z["a"]}, np.arange(4))[0]  # a rule given is kept
    'at_most'
    """
    ratios = firing(group, logits, rows)
    if rule != "auto":
        return rule, ratios
    return ("exact" if min(ratios.values()) >= FIRES else "at_most"), ratios


def held_out_record(group, logits, reconciled, rows, rule, fires):
    """What reconciling does on the held-out ``rows``, without labels: the ``rule`` taken and the
    classes' ``fires`` ratios it was taken on (:func:`settle_rule`), the mean of the teachers'
    summed probabilities over the group (1 for consistent teachers), the share of rows where
    that sum is off by more than 0.5, and per reconciled task the share of decisions
    (probability 0.5) that change; None without held-out rows (``data.holdout: 0``)."""
    settled = {"rule": rule, "fires": fires}
    if not len(rows):
        return {
            "tasks": list(group),
            "sum_mean": None,
            "sum_off_share": None,
            "changed": {t: None for t in reconciled},
            **settled,
        }
    p = np.stack([1 / (1 + np.exp(-np.asarray(logits[t][rows], np.float64))) for t in group], axis=1).sum(axis=1)
    changed = {
        t: round(float(np.mean((np.asarray(logits[t][rows]) > 0) != (q[rows] > 0))), 4) for t, q in reconciled.items()
    }
    return {
        "tasks": list(group),
        "sum_mean": round(float(p.mean()), 4),
        "sum_off_share": round(float(np.mean(np.abs(p - 1) > 0.5)), 4),
        "changed": changed,
        **settled,
    }


def log_one_of(log, records):
    """One line per reconciled group, and the ``one_of`` event with the records."""
    for r in records:
        low = min(r["fires"], key=r["fires"].get)
        said = (
            f"data.one_of: targets of {', '.join(r['changed'])} reconciled over {len(r['tasks'])} classes, "
            f"{r['rule']} (the class that fires least: {low} {r['fires'][low]:.2f})"
        )
        if r["sum_mean"] is None:
            log.say(f"{said} (no held-out split to measure them on)")
            continue
        changes = ", ".join(f"{t} {100 * v:.1f}%" for t, v in r["changed"].items())
        log.say(
            f"{said}; held-out: the teachers' probabilities sum to {r['sum_mean']:.2f} on average (off by "
            f"more than 0.5 on {100 * r['sum_off_share']:.1f}% of images); decisions changed: {changes}"
        )
    if records:
        log.write("one_of", groups=records)
