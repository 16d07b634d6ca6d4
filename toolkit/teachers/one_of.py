"""Targets reconciled across teachers whose tasks are the classes of one label (``data.one_of``).

Teachers trained on disjoint class sets each answer "is it my class k?" without
knowing the other teachers' classes: teacher B says "shirt" with probability 0.6 on an
image that teacher A calls a T-shirt with 0.9. When the config declares that a group
of binary tasks, chosen or not, are all the classes of one label (each image is
exactly one of them), the group's probabilities should sum to 1 on every image, and
each task's target is its teacher's probability divided by the group's sum
(``data.one_of_rule``):

* ``at_most`` (the default): where the sum exceeds 1, ``q_k = p_k / sum_j p_j``;
  elsewhere ``q_k = p_k``. Probabilities over 1 in all say that a teacher claims an
  image that is another's; under 1, that some teacher misses one, and which one is not
  known, so nothing is raised.
* ``exact``: ``q_k = p_k / sum_j p_j`` on every image, the simplest case of unifying
  heterogeneous classifiers (Vongkulbhisal et al., "Unifying Heterogeneous Classifiers
  with Distillation", CVPR 2019), which treats each teacher's output as the union
  distribution conditioned on its own classes.

(``p_j = sigmoid(z_j)``, ``j`` over every task of the group.) ``exact`` trades tasks
where a teacher under-claims its own class: on real_archs, MobileNetV2 rarely fires on
shirts (its decisions at 0.5 find 4% shirts, its mean probability 11%), and raising
every under-claimed image's probabilities hands those shirts to ResNet-18's classes.
On labeled training rows no teacher trained on, the targets' F1 against the teachers'
own: Fashion-MNIST ``exact`` +0.87 pt on the mean, every task +0.04 or more;
``at_most`` +0.36, every task +0.02 or more; real_archs ``exact`` +1.10 on the mean
but pullover -1.71, ``at_most`` +0.79, every task +0.01 or more
(``samples/measure_one_of.py``). The student learns ``logit(q_k)``; evaluation still
compares with the teachers' own outputs. Unchosen tasks of a group take part through
their teachers' logits (one more output of the same pass) and are not learned.

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


def held_out_record(group, logits, reconciled, rows):
    """What reconciling does on the held-out ``rows``, without labels: the mean of the
    teachers' summed probabilities over the group (1 for consistent teachers), the share of
    rows where that sum is off by more than 0.5, and per reconciled task the share of
    decisions (probability 0.5) that change; None without held-out rows (``data.holdout: 0``)."""
    if not len(rows):
        return {"tasks": list(group), "sum_mean": None, "sum_off_share": None, "changed": {t: None for t in reconciled}}
    p = np.stack([1 / (1 + np.exp(-np.asarray(logits[t][rows], np.float64))) for t in group], axis=1).sum(axis=1)
    changed = {
        t: round(float(np.mean((np.asarray(logits[t][rows]) > 0) != (q[rows] > 0))), 4) for t, q in reconciled.items()
    }
    return {
        "tasks": list(group),
        "sum_mean": round(float(p.mean()), 4),
        "sum_off_share": round(float(np.mean(np.abs(p - 1) > 0.5)), 4),
        "changed": changed,
    }


def log_one_of(log, records):
    """One line per reconciled group, and the ``one_of`` event with the records."""
    for r in records:
        said = f"data.one_of: targets of {', '.join(r['changed'])} reconciled over {len(r['tasks'])} classes"
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
