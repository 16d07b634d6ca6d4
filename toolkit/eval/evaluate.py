"""Metrics of a finished run: the student (and the baselines) against the teachers.

* held-out part of the unlabeled training data: agreement with each task's
  teacher (same decision at logit 0 / same argmax), per task and, per model, its
  mean over each teacher's tasks (``holdout_by_teacher``: two students are fairly
  compared on a teacher neither starts from, toolkit.method.width_choice);
* labeled evaluation data, where given: accuracy, F1 (and average precision for
  binary tasks) per task for the student, each baseline and the teacher on its own
  task, plus agreement. F1 and accuracy use each model's decision thresholds, all
  set by one rule (``evaluation.threshold``, toolkit.eval.thresholds); each model's
  F1 margin over the task's teacher with its paired bootstrap 95% interval
  (``f1_margin_ci95``, toolkit.eval.metrics.margin_interval).

Writes ``metrics.json`` and the plots, and returns the metrics dict.
"""

import numpy as np

from amalgam.runtime.files import write_json_atomic
from amalgam.toolkit.eval.metrics import (
    agreement,
    decide,
    expected_f1,
    kl_from_teacher,
    margin_interval,
    task_metrics,
)
from amalgam.toolkit.eval.plots import plot_run
from amalgam.toolkit.eval.thresholds import teacher_thresholds
from amalgam.toolkit.student.infer import predict
from amalgam.toolkit.student.targetnet import count_params


def _mean(rows, model, key):
    values = [r[model][key] for r in rows if r.get(model) and r[model].get(key) is not None]
    return float(np.mean(values)) if values else None


def task_rows(teachers, models, data, indices, thresholds):
    """Per chosen task: agreement with the teacher (at logit 0) and, with labels, accuracy / F1
    with each model's decision threshold (``thresholds[model][task]``; teachers under "teacher")."""
    rows = []
    preds = {name: predict(net, data.inputs, indices) for name, net in models.items() if net is not None}
    for tg in teachers:
        for task in tg.tasks:
            teacher_logits = np.asarray(data.plain_logits[task.name])[indices]
            row = {"task": task.name, "teacher_name": tg.name, "kind": task.kind}
            labels = data.labels.get(task.name)
            for name, logits in {"teacher": teacher_logits, **{n: p[task.name] for n, p in preds.items()}}.items():
                threshold = thresholds[name].get(task.name, 0.0)
                row[name] = (
                    {}
                    if name == "teacher"
                    else {
                        "agreement": agreement(task.kind, logits, teacher_logits),
                        "kl_from_teacher": kl_from_teacher(task.kind, logits, teacher_logits),
                    }
                )
                row[name]["f1_est"] = expected_f1(task.kind, logits, teacher_logits, threshold)
                if labels is not None:
                    row[name].update(task_metrics(task.kind, logits, np.asarray(labels)[indices], threshold))
            for name in preds:
                row[name].update(margins(row[name], row["teacher"]))
                if labels is not None:
                    row[name]["f1_margin_ci95"] = _interval(
                        task, thresholds, name, labels, indices, preds, teacher_logits
                    )
            rows.append(row)
    return rows


def _interval(task, thresholds, name, labels, indices, preds, teacher_logits):
    """Paired bootstrap 95% interval of model ``name``'s F1 minus the teacher's on ``task``."""
    decided = {
        who: decide(task.kind, logits, thresholds[who].get(task.name, 0.0))
        for who, logits in ((name, preds[name][task.name]), ("teacher", teacher_logits))
    }
    return margin_interval(np.asarray(labels)[indices], decided[name], decided["teacher"])


def margins(model, teacher):
    """A model's margins on one task against the task's teacher, in F1: ``f1_est_margin``
    (label-free: each one's :func:`expected_f1` judged by the teacher) and, with labels,
    ``f1_margin``."""
    out = {"f1_est_margin": model["f1_est"] - teacher["f1_est"]}
    if "f1" in model and "f1" in teacher:
        out["f1_margin"] = model["f1"] - teacher["f1"]
    return out


def worst_task(rows, model, key):
    """``{"task", key}`` of the task with the lowest ``key`` (a margin) of ``model`` in ``rows``,
    and the margin's interval (``<key>_ci95``) where the row has one; or None.

    >>> rows = [{"task": "a", "student": {"f1_margin": 0.01}}, {"task": "b", "student": {"f1_margin": -0.02}}]
    >>> worst_task(rows, "student", "f1_margin")
    {'task': 'b', 'f1_margin': -0.02}
    """
    scored = [r for r in rows if r.get(model) and r[model].get(key) is not None]
    if not scored:
        return None
    worst = min(scored, key=lambda r: (r[model][key], r["task"]))
    interval = {f"{key}_ci95": worst[model][f"{key}_ci95"]} if f"{key}_ci95" in worst[model] else {}
    return {"task": worst["task"], key: worst[model][key], **interval}


def by_teacher(rows, models):
    """``{model: {teacher: mean agreement over its tasks}}`` of task rows.

    >>> rows = [{"teacher_name": "A", "student": {"agreement": 0.9}},
    ...         {"teacher_name": "B", "student": {"agreement": 0.8}},
    ...         {"teacher_name": "B", "student": {"agreement": 0.6}}]
    >>> by_teacher(rows, ["student"])
    {'student': {'A': 0.9, 'B': 0.7}}
    """
    means = {}
    for model in models:
        per = {}
        for r in rows:
            if r.get(model):
                per.setdefault(r["teacher_name"], []).append(r[model]["agreement"])
        means[model] = {t: round(float(np.mean(v)), 6) for t, v in per.items()}
    return means


def evaluate_run(
    out,
    config,
    teachers,
    student,
    baselines,
    train,
    holdout_idx,
    evaluation,
    teacher_sizes,
    table,
    log,
    thresholds,
    finetune=None,
):
    """``baselines``: ``{name: net}`` of the baselines trained (``kd``, ``layerwise_ka``, ``cfl``), each
    scored under its name; ``thresholds``: the student's and each baseline's decision thresholds (as
    in their specs); the teachers' are set here by the same rule (toolkit.eval.thresholds). The
    summary always has a ``kd`` entry (all None when KD is off), and each trained model's worst
    task beside its means (``worst_holdout``: the lowest label-free ``f1_est_margin`` on the
    held-out split; ``worst_eval``: the lowest ``f1_margin`` on labeled eval data).
    ``finetune``: the fine-tune's epoch choice (toolkit.method.lag), kept as given."""
    models = {"student": student, **baselines}
    rule = config.evaluation.threshold
    kinds = {task.name: task.kind for tg in teachers for task in tg.tasks}
    thresholds = {**thresholds, "teacher": teacher_thresholds(rule, train, holdout_idx, kinds)}
    metrics = {
        "threshold_rule": rule,
        "thresholds": thresholds,
        "holdout": task_rows(teachers, models, train, holdout_idx, thresholds),
    }
    metrics["holdout_by_teacher"] = by_teacher(metrics["holdout"], [m for m, net in models.items() if net is not None])
    if evaluation is not None:
        metrics["eval"] = task_rows(teachers, models, evaluation, np.arange(len(evaluation)), thresholds)
    rows = metrics.get("eval") or metrics["holdout"]
    metrics["summary"] = {
        model: {key: _mean(rows, model, key) for key in ("agreement", "accuracy", "f1", "ap")}
        for model in ("student", *dict.fromkeys(["kd", *baselines]), "teacher")
    }
    for model in models:  # each task against its own teacher: the worst one beside the mean
        metrics["summary"][model]["worst_holdout"] = worst_task(metrics["holdout"], model, "f1_est_margin")
        metrics["summary"][model]["worst_eval"] = worst_task(metrics.get("eval", []), model, "f1_margin")
    params = count_params(student)
    metrics["params"] = {
        "student": params,
        "teachers": sum(teacher_sizes.values()),
        "largest_teacher": max(teacher_sizes.values()),
        "ratio": params / sum(teacher_sizes.values()),
        "ratio_largest": params / max(teacher_sizes.values()),
    }
    metrics["excess_loss"] = {str(k): v for k, v in table.items()}
    metrics["finetune"] = finetune
    if train.views:  # each teacher's self-agreement per view, and whether its targets used it
        metrics["teacher_views"] = train.views
    if train.one_of:  # what reconciling the targets did on the held-out split
        metrics["one_of"] = train.one_of
    write_json_atomic(out / "metrics.json", metrics)
    log.write("eval", summary=metrics["summary"], params=metrics["params"])
    plot_run(out, metrics, log_path=out / "metrics.jsonl")
    return metrics
