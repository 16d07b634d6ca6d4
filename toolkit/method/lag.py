"""Tasks that lag, and what to change (ours).

Read after the fine-tune, per chosen task, on the held-out split (no labels):

* **still rising**: its held-out agreement with its targets at the kept epoch is above
  its agreement a quarter of the fine-tune earlier by more than the noise
  (:data:`~amalgam.toolkit.method.endtoend.NOISE_SE` standard errors of the difference):
  the student had not converged, more epochs (``training.finetune_epochs``) would help;
* **short of steps** (the whole fine-tune): it took fewer optimiser steps than ``auto``
  asks for (toolkit.method.epochs): the data is small for the recipe, more images
  (``data.train``) would help.

Whether a task lags *its teacher* is a question of labels: without them, its margin
can only be judged by the teacher itself, and that judge calls every disagreement the
student's error (the held-out expected-F1 margins of ``metrics.json`` are -1.4 to -8
pt on Fashion-MNIST tasks whose test F1 rose by up to 2.5 pt), and a gap between the
student's fit on its training images and on held-out ones was as large on students
that held every task (1-2.5 pt at 5,400 images) as anywhere. So with labeled
evaluation data the run names each task more than ``LAG`` below its teacher's F1
(:func:`lagging`), with the change the held-out signals point to: more epochs if it was
still rising, more images if the fine-tune was short of steps, else a wider student.

Each finding is one :class:`Lag` with the line the run prints and the key to change;
``metrics.json`` keeps them under ``lag``.

>>> from amalgam.toolkit.method.endtoend import HeldoutFit
>>> history = [(e, HeldoutFit({"a": 0.90 + 0.01 * e, "b": 0.95}, {}, 2000)) for e in range(1, 9)]
>>> [lag.line for lag in lags(history, 8, steps_short=False)]
['task a: held-out agreement with its targets still rose over the last 2 of 8 fine-tune epochs (0.960 -> 0.980): not converged; more epochs (training.finetune_epochs: 16)']
"""

import math
from dataclasses import asdict, dataclass

from amalgam.toolkit.method.endtoend import NOISE_SE, HeldoutFit
from amalgam.toolkit.method.width_choice import WIDTHS
from amalgam.toolkit.runlog import read_log

LAG = 0.01  # F1 below the teacher's that the run names (the validation gate's default max_degradation)


@dataclass
class Lag:
    """One finding: the task (None: the whole fine-tune), its kind, the line said, the key to change."""

    task: str | None
    kind: str  # "rising", "short" or "below_teacher"
    line: str
    change: str

    def to_dict(self):
        return asdict(self)


def _rising(task, history, epochs):
    """A :class:`Lag` when ``task``'s held-out agreement at the last epoch of ``history`` is above
    its agreement a quarter of the fine-tune earlier by more than the noise; else None."""
    back = max(1, math.ceil(len(history) / 4))
    if len(history) <= back:
        return None
    (_, then), (_, now) = history[-1 - back], history[-1]
    rise = now.agreement[task] - then.agreement[task]
    if rise <= NOISE_SE * math.hypot(now.noise(task), then.noise(task)):
        return None
    more = f"training.finetune_epochs: {2 * epochs}"
    return Lag(
        task,
        "rising",
        f"task {task}: held-out agreement with its targets still rose over the last {back} of {epochs} fine-tune "
        f"epochs ({then.agreement[task]:.3f} -> {now.agreement[task]:.3f}): not converged; more epochs ({more})",
        more,
    )


def lags(history, epochs, steps_short):
    """The held-out :class:`Lag` findings of a fine-tune: ``history`` its (epoch, HeldoutFit)
    records in order, the kept epoch's last; ``steps_short`` whether it took fewer steps than
    ``auto`` asks for."""
    found = []
    if history:
        found += [lag for task in history[-1][1].agreement if (lag := _rising(task, history, epochs))]
    if steps_short:
        found.append(
            Lag(
                None,
                "short",
                f"the fine-tune took fewer optimiser steps than it asks for ({epochs} epochs): the training data "
                f"is small for this recipe; more images (data.train) or epochs (training.finetune_epochs)",
                "data.train",
            )
        )
    return found


def advice(task, found, epochs, width):
    """What to change for a task that lags its teacher, from the held-out findings ``found``:
    more epochs if it was still rising, more images if the fine-tune was short of steps, else a
    wider trunk than ``width`` (the next of toolkit.method.width_choice.WIDTHS), else more epochs.

    >>> advice("coat", [], 12, 0.75)
    'a wider student (student.width: 0.875, branching.size_budget: null)'
    >>> advice("coat", [], 12, 1.0)
    'more epochs (training.finetune_epochs: 24)'
    """
    kinds = {lag.kind for lag in found if lag.task in (task, None)}
    if "rising" in kinds or ("short" not in kinds and width >= 1.0):
        return f"more epochs (training.finetune_epochs: {2 * epochs})"
    if "short" in kinds:
        return "more images (data.train)"
    wider = min(w for w in WIDTHS if w > width)
    return f"a wider student (student.width: {wider:g}, branching.size_budget: null)"


def lagging(eval_rows, found, epochs, width):
    """A :class:`Lag` for each task whose student F1 on the labeled eval rows is more than
    :data:`LAG` below its teacher's (``f1_margin``, toolkit.eval.evaluate), with :func:`advice`."""
    out = []
    for r in eval_rows:
        margin = r["student"].get("f1_margin")
        if margin is not None and margin < -LAG:
            change = advice(r["task"], found, epochs, width)
            out.append(
                Lag(
                    r["task"],
                    "below_teacher",
                    f"task {r['task']}: student F1 {100 * margin:+.2f} pt against its teacher {r['teacher_name']} on "
                    f"the labeled eval data: {change}",
                    change,
                )
            )
    return out


def finetune_history(log_path, phase="finetune"):
    """``phase``'s (epoch, HeldoutFit) records from a run log, up to the epoch it kept (the last
    record of an epoch a resumed run redid wins)."""
    fits = {
        r["epoch"]: HeldoutFit(r["tasks"], {}, r["rows"])
        for r in read_log(log_path, "heldout")
        if r["phase"] == phase and "tasks" in r
    }
    kept = [r["epoch"] for r in read_log(log_path, "checkpoint") if r["phase"] == phase]
    last = kept[-1] if kept and kept[-1] is not None else max(fits, default=0)
    return [(e, fits[e]) for e in sorted(fits) if e <= last]


def kept_epoch(log_path, epochs, phase="finetune"):
    """What the phase's epoch choice did (toolkit.method.endtoend.BestEpoch), from the run log:
    ``{"kept_epoch", "epochs", "fell_short": {epoch: task}, "line"}``, the line saying which
    later epochs were passed over for which task (None when the last epoch was kept)."""
    records = {r["epoch"]: r for r in read_log(log_path, "heldout") if r["phase"] == phase}
    kept = [r["epoch"] for r in read_log(log_path, "checkpoint") if r["phase"] == phase]
    epoch = kept[-1] if kept else None
    short = {e: r["lost_on"] for e, r in sorted(records.items()) if r.get("lost_on") and epoch and e > epoch}
    line = None
    if short:
        by_task = {}
        for e, task in short.items():
            by_task.setdefault(task, []).append(str(e))
        line = (
            f"{phase}: kept epoch {epoch} of {epochs}: later epochs agreed with a task's targets on the held-out "
            f"split worse than its best epoch ("
            + "; ".join(f"{task} at epoch {', '.join(es)}" for task, es in by_task.items())
            + ")"
        )
    return {"kept_epoch": epoch, "epochs": epochs, "fell_short": short, "line": line}
