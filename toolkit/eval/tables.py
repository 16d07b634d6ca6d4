"""Every Markdown table the toolkit prints or writes, and the one way a number goes in a cell.

>>> cell(None), cell(0.98765), cell(1234567, ",")
('-', '0.988', '1,234,567')
>>> print(markdown(["task", "F1"], [["coat", cell(0.5)]]))
| task | F1 |
|---|---|
| coat | 0.500 |
"""


def cell(value, fmt=".3f"):
    """A table cell: ``-`` for a missing value, else ``value`` formatted."""
    return "-" if value is None else format(value, fmt)


def markdown(header, rows):
    """A Markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


BASELINE_LABELS = {"kd": "KD", "layerwise_ka": "LW-KA", "cfl": "CFL"}  # metrics.json key -> column label


def _baselines(rows):
    """The baselines a run's rows score: KD always (its columns read "-" when it is off), the others if trained."""
    return [m for m in BASELINE_LABELS if m == "kd" or any(m in r for r in rows)]


def run_task_table(rows):
    """A run's metrics per task: teacher F1, student F1 / agreement, each baseline's F1 / agreement."""
    baselines = _baselines(rows)
    body = []
    for r in rows:
        t, s = r.get("teacher") or {}, r.get("student") or {}
        line = [r["task"], r["teacher_name"], cell(t.get("f1")), cell(s.get("f1")), cell(s.get("agreement"))]
        for m in baselines:
            b = r.get(m) or {}
            line += [cell(b.get("f1")), cell(b.get("agreement"))]
        body.append(line)
    header = ["task", "teacher", "teacher F1", "student F1", "student agree"]
    for m in baselines:
        header += [f"{BASELINE_LABELS[m]} F1", f"{BASELINE_LABELS[m]} agree"]
    return markdown(header, body)


def run_summary(metrics):
    """What `amalgam amalgamate` prints: the task table, mean F1 and agreement, sizes."""
    s, p = metrics["summary"], metrics["params"]
    rows = metrics.get("eval") or metrics["holdout"]
    baselines = [m for m in _baselines(rows) if m in s]
    f1 = ", ".join(f"{BASELINE_LABELS[m]} {cell(s[m]['f1'])}" for m in baselines)
    agree = ", ".join(f"{BASELINE_LABELS[m]} {cell(s[m]['agreement'])}" for m in baselines)
    return "\n".join(
        [
            run_task_table(rows),
            "",
            f"mean F1: teachers {cell(s['teacher']['f1'])}, student {cell(s['student']['f1'])}, {f1}; "
            f"mean agreement: student {cell(s['student']['agreement'])}, {agree}",
            *worst_lines(s, ["student", *baselines]),
            f"params: student {p['student']:,} vs teachers {p['teachers']:,} ({p['ratio']:.2f}x; "
            f"{p['ratio_largest']:.2f}x the largest)",
            *what_the_run_did(metrics),
        ]
    )


def what_the_run_did(metrics):
    """The lines a run says about its tasks after the fine-tune: an earlier epoch kept for a
    task, then each lag finding (toolkit.method.lag)."""
    choice = metrics.get("finetune") or {}
    return [line for line in [choice.get("line"), *(lag["line"] for lag in metrics.get("lag", []))] if line]


def margin_table(metrics):
    """report.md's per-task table: each chosen task against its own teacher, on the held-out split
    (no labels: agreement with the teacher's decisions, KL divergence from its probabilities)
    and on the labeled eval data (student F1 - teacher F1), then what the run did.

    >>> rows = [{"task": "coat", "teacher_name": "A", "student": {"agreement": 0.98, "kl_from_teacher": 0.0123}}]
    >>> print(margin_table({"holdout": rows, "lag": []}))
    | task | teacher | held-out agreement | held-out KL from teacher | test F1 margin (pt) | its 95% interval (pt) |
    |---|---|---|---|---|---|
    | coat | A | 0.980 | 0.0123 | - | - |
    """
    test = {r["task"]: r["student"] for r in metrics.get("eval") or []}
    body = [
        [
            r["task"],
            r["teacher_name"],
            cell(r["student"]["agreement"]),
            cell(r["student"].get("kl_from_teacher"), ".4f"),
            cell(_pt(test.get(r["task"], {}).get("f1_margin")), "+.2f"),
            interval(test.get(r["task"], {}).get("f1_margin_ci95")),
        ]
        for r in metrics["holdout"]
    ]
    header = [
        "task",
        "teacher",
        "held-out agreement",
        "held-out KL from teacher",
        "test F1 margin (pt)",
        "its 95% interval (pt)",
    ]
    said = what_the_run_did(metrics)
    return markdown(header, body) + ("\n\n" + "\n".join(said) if said else "")


def _pt(value):
    return None if value is None else 100 * value


def interval(bounds):
    """A margin's bootstrap interval in points, ``[-0.81, +0.42]``, or ``-``.

    >>> interval([-0.0081, 0.0042]), interval(None)
    ('[-0.81, +0.42]', '-')
    """
    return "-" if bounds is None else f"[{100 * bounds[0]:+.2f}, {100 * bounds[1]:+.2f}]"


def worst_lines(summary, models):
    """One line naming each model's worst task against its own teacher (labeled eval data), if scored.

    >>> worst_lines({"student": {"worst_eval": {"task": "coat", "f1_margin": -0.0042}}}, ["student", "kd"])
    ['worst task: student coat -0.42 pt F1 vs its teacher']
    """
    parts = [
        f"{BASELINE_LABELS.get(m, m)} {w['task']} {100 * w['f1_margin']:+.2f} pt"
        + (f" {interval(w['f1_margin_ci95'])}" if w.get("f1_margin_ci95") else "")
        for m in models
        if (w := (summary.get(m) or {}).get("worst_eval"))
    ]
    return [f"worst task: {', '.join(parts)} F1 vs its teacher"] if parts else []


def validation_task_table(rows, torch_agreement=None):
    """A validation per task: teacher and student accuracy / F1, agreement with teacher and PyTorch."""
    body = []
    for r in rows:
        s, t = r["student"], r["teacher"]
        torch_agree = None if torch_agreement is None else torch_agreement.get(r["name"])
        body.append(
            [
                r["name"],
                t["name"] or "-",
                r["kind"],
                cell(t["accuracy"]),
                cell(t["f1"]),
                cell(s["accuracy"]),
                cell(s["f1"]),
                cell(s["agreement"]),
                cell(torch_agree),
            ]
        )
    return markdown(
        [
            "task",
            "teacher",
            "kind",
            "teacher acc",
            "teacher F1",
            "student acc",
            "student F1",
            "agree teacher",
            "agree PyTorch",
        ],
        body,
    )


def footprint_table(report):
    """Student vs all teachers together: params, file size, CPU latency."""
    s, t = report["student"], report["teachers"]
    rows = [
        ["params", cell(s["params"], ","), cell(t["params"], ",")],
        ["ONNX size (KiB)", cell(s["onnx_bytes"] / 1024, ".1f"), cell(t["onnx_bytes"] / 1024, ".1f")],
    ]
    for key, value in s["latency_ms"].items():
        rows.append([f"latency batch {key[1:]} (ms)", cell(value, ".2f"), cell(t["latency_ms"][key], ".2f")])
    return markdown(["", "student", "teachers"], rows)
