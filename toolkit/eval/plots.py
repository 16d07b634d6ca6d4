"""Plots of a run: loss per stage (and fine-tune), per-task F1 student vs teacher."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from amalgam.runtime.files import atomic_path  # noqa: E402
from amalgam.toolkit.eval.tables import BASELINE_LABELS  # noqa: E402
from amalgam.toolkit.runlog import read_log  # noqa: E402


def _save(fig, path):
    """The figure as a PNG at ``path``, written atomically."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_losses(log_path, path):
    epochs = read_log(log_path, "epoch")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    phases = list(dict.fromkeys(r["phase"] for r in epochs))
    x = 0
    for phase in phases:
        ys = [r["loss"] for r in epochs if r["phase"] == phase]
        ax.plot(range(x + 1, x + len(ys) + 1), ys, marker="o", label=phase)
        x += len(ys)
    ax.set_xlabel("epoch (all phases in order)")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7, ncol=3)
    _save(fig, path)


def plot_task_bars(rows, path, key="f1"):
    """Bars per task for teacher, student and each baseline (``key``: f1 or agreement)."""
    models = [
        m for m in ("teacher", "student", *BASELINE_LABELS) if any(r.get(m, {}).get(key) is not None for r in rows)
    ]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 3.5))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        values = [(r.get(model) or {}).get(key) or 0.0 for r in rows]
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=model)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels([r["task"] for r in rows], rotation=20)
    ax.set_ylabel(key)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_run(out, metrics, log_path):
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_losses(log_path, plots / "loss_per_stage.png")
    rows = metrics.get("eval") or metrics["holdout"]
    key = "f1" if any("f1" in (r.get("student") or {}) for r in rows) else "agreement"
    plot_task_bars(rows, plots / f"{key}_per_task.png", key)
