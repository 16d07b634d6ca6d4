"""Tasks that lag, and what to change (ours).

Read after the fine-tune, without labels, per chosen task:

* **still rising**: its held-out agreement with its targets at the kept epoch is above
  its agreement a quarter of the fine-tune earlier by more than the noise
  (:data:`~amalgam.toolkit.method.endtoend.NOISE_SE` standard errors): the student had
  not converged, more epochs (``training.finetune_epochs``) would still help;
* **fits its training images better**: its agreement on as many training rows as
  held-out ones is above the held-out agreement by more than the noise and at least
  :data:`GAP`: the student learns those images rather than the task, more images
  (``data.train``) would help;
* **short of steps** (the whole fine-tune): it took fewer optimiser steps than
  ``auto`` asks for (toolkit.method.epochs), the data being small for the recipe.

Each finding is one :class:`Lag` with the line the run prints and the key to change;
``metrics.json`` keeps them under ``lag``.

>>> from amalgam.toolkit.method.endtoend import HeldoutFit
>>> history = [(e, HeldoutFit({"a": 0.90 + 0.01 * e, "b": 0.95}, {}, 2000)) for e in range(1, 9)]
>>> [lag.line for lag in lags(history, 8, HeldoutFit({"a": 0.98, "b": 0.99}, {}, 2000), steps_short=False)]
['task a: held-out agreement with its targets still rose over the last 2 of 8 fine-tune epochs (0.960 -> 0.980): not converged; more epochs (training.finetune_epochs: 16)', 'task b: agrees with its targets on training images 0.990, on held-out ones 0.950: more images (data.train)']
"""

import math
from dataclasses import asdict, dataclass

from amalgam.toolkit.method.endtoend import NOISE_SE, HeldoutFit
from amalgam.toolkit.runlog import read_log

GAP = 0.01  # a train / held-out agreement gap smaller than this is not worth more images


@dataclass
class Lag:
    """One finding: the task (None: the whole fine-tune), what was seen, the key to change."""

    task: str | None
    kind: str  # "rising", "overfit" or "short"
    line: str
    change: str

    def to_dict(self):
        return asdict(self)


def _rising(task, history, epochs):
    """A :class:`Lag` when ``task``'s held-out agreement at the last epoch is above its agreement a
    quarter of the fine-tune earlier by more than the noise; else None."""
    back = max(1, math.ceil(len(history) / 4))
    if len(history) <= back:
        return None
    (_, then), (_, now) = history[-1 - back], history[-1]
    rise = now.agreement[task] - then.agreement[task]
    if rise <= NOISE_SE * now.noise(task):
        return None
    more = f"training.finetune_epochs: {2 * epochs}"
    return Lag(
        task,
        "rising",
        f"task {task}: held-out agreement with its targets still rose over the last {back} of {epochs} fine-tune "
        f"epochs ({then.agreement[task]:.3f} -> {now.agreement[task]:.3f}): not converged; more epochs ({more})",
        more,
    )


def _overfit(task, held_out, train):
    """A :class:`Lag` when ``task`` agrees with its targets on training rows better than on held-out
    ones by more than the noise of both and at least :data:`GAP`; else None."""
    gap = train.agreement[task] - held_out.agreement[task]
    noise = NOISE_SE * math.hypot(train.noise(task), held_out.noise(task))
    if gap <= max(noise, GAP):
        return None
    return Lag(
        task,
        "overfit",
        f"task {task}: agrees with its targets on training images {train.agreement[task]:.3f}, on held-out ones "
        f"{held_out.agreement[task]:.3f}: more images (data.train)",
        "data.train",
    )


def lags(history, epochs, train, steps_short):
    """The :class:`Lag` findings of a fine-tune: ``history`` its (epoch, HeldoutFit) records in order,
    the kept epoch's last; ``train`` the same net's fit on training rows; ``steps_short`` whether it
    took fewer steps than ``auto`` asks for."""
    found = []
    if history:
        held_out = history[-1][1]
        for task in held_out.agreement:
            found += [lag for lag in (_rising(task, history, epochs), _overfit(task, held_out, train)) if lag]
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
