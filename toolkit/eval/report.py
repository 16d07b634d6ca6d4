"""Readable tables of a run's metrics for the terminal and Markdown."""

import click


def _fmt(value):
    return "-" if value is None else f"{value:.3f}"


def task_table(rows):
    """Markdown table: per task, teacher F1, student F1 / agreement, KD F1 / agreement."""
    lines = ["| task | teacher | teacher F1 | student F1 | student agree | KD F1 | KD agree |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, s, k = r.get("teacher") or {}, r.get("student") or {}, r.get("kd") or {}
        lines.append(f"| {r['task']} | {r['teacher_name']} | {_fmt(t.get('f1'))} | {_fmt(s.get('f1'))} | "
                     f"{_fmt(s.get('agreement'))} | {_fmt(k.get('f1'))} | {_fmt(k.get('agreement'))} |")
    return "\n".join(lines)


def print_summary(metrics):
    rows = metrics.get("eval") or metrics["holdout"]
    click.echo(task_table(rows))
    s = metrics["summary"]
    click.echo(f"\nmean F1: teachers {_fmt(s['teacher']['f1'])}, student {_fmt(s['student']['f1'])}, "
               f"KD {_fmt(s['kd']['f1'])}; mean agreement: student {_fmt(s['student']['agreement'])}, "
               f"KD {_fmt(s['kd']['agreement'])}")
    p = metrics["params"]
    click.echo(f"params: student {p['student']:,} vs teachers {p['teachers']:,} ({p['ratio']:.2f}x; "
               f"{p['ratio_largest']:.2f}x the largest)")
