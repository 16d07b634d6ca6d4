"""End-to-end training of an assembled TargetNet on the teachers' outputs.

Used for the fine-tune (METHOD.md, step 4: all layers trainable, branches
included, the same output losses) and the baselines: multi-teacher KD (the same
final architecture trained end to end from the start, as KamalEngine and
torchdistill do) and the feature baselines, which add a training-only feature loss
(toolkit.method.feature_baselines), so that one command compares them under one harness.

Each keeps an epoch chosen on the held-out part of the unlabeled training split, task
by task (:class:`BestEpoch`): the latest epoch, unless it agrees with some task's
targets there worse than the epoch kept so far, by more than the noise of that
agreement. No task is traded for the mean, and a difference within the noise (what
another CPU or thread count moves) does not decide. The labeled evaluation data never
chooses anything.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from amalgam.toolkit.dist import Ranks
from amalgam.toolkit.eval.metrics import agreement
from amalgam.toolkit.method.checkpoint import load_checkpoint, restore, save_checkpoint
from amalgam.toolkit.method.loop import Phase, run_phase
from amalgam.toolkit.method.losses import excess_loss, task_loss
from amalgam.toolkit.student.adapters import fit_adapter
from amalgam.toolkit.student.infer import predict, to_tensor

FIT_SAMPLES = 1024


def task_kinds(net):
    return {s.name: s.kind for b in net.branches.values() for s in b.slots}


def param_groups(net, head_lr_mult):
    """Trunk, gates and adapters at the base rate; the teachers' layers at ``head_lr_mult`` x."""
    bodies = {id(p) for b in net.branches.values() for p in b.body.parameters()}
    base = [p for p in net.parameters() if id(p) not in bodies]
    heads = [p for b in net.branches.values() for p in b.body.parameters()]
    return [(base, 1.0), (heads, head_lr_mult)]


def unfreeze(net):
    for p in net.parameters():
        p.requires_grad_(True)
    return net


@torch.no_grad()
def fit_net_adapters(net, data, indices, device):
    """Least-squares start for every branch adapter of a fresh net (the KD baseline
    gets the same start as the layer-wise student's stage branches), on the trunk in
    train mode as the first steps will run it."""
    sample = np.sort(np.asarray(indices)[:FIT_SAMPLES])
    h = to_tensor(data.inputs, sample, device)
    net.eval()
    for block, module in enumerate(net.trunk, start=1):
        h = module.train()(h)
        for key, point in net.branch_points.items():
            teacher = key.split("@")[0]
            if point == block and (teacher, block) in data.taps:
                branch = net.branches[key]
                fit_adapter(branch.adapter, branch.gate(h), to_tensor(data.taps[(teacher, block)], sample, device))


@dataclass
class HeldoutFit:
    """Per task, a net's fit to its targets on ``rows`` held-out rows: ``agreement`` (the share
    of same decisions at logit 0 / argmax) and ``excess`` (the mean KL from the target)."""

    agreement: dict
    excess: dict
    rows: int

    def mean(self):
        """(mean agreement, mean excess loss) over the tasks."""
        return float(np.mean(list(self.agreement.values()))), float(np.mean(list(self.excess.values())))

    def noise(self, task):
        """The standard error of ``task``'s agreement on this many rows (a binomial share's,
        at least one row's worth): what float order alone can move it by."""
        a = self.agreement[task]
        return max(float(np.sqrt(a * (1 - a) / self.rows)), 1 / self.rows)


@torch.no_grad()
def heldout_fit(net, data, indices, device, ranks=None):
    """The :class:`HeldoutFit` of ``net`` to the targets ``data.logits`` on the held-out rows
    ``indices``. In a torchrun job (``ranks``) each rank scores its share of the rows
    (``Ranks.split``) and the sums are added up: every rank gets the numbers of the whole split."""
    ranks = ranks or Ranks()
    rows = ranks.split(indices)
    kinds = task_kinds(net)
    logits = predict(net, data.inputs, rows, device) if len(rows) else {}
    sums = []
    for name, kind in kinds.items():  # the same order on every rank
        if name not in logits:
            sums += [0.0, 0.0]
            continue
        z, teacher = logits[name], np.asarray(data.logits[name])[rows]
        sums += [
            agreement(kind, z, teacher) * len(rows),
            excess_loss(kind, torch.from_numpy(z), torch.from_numpy(teacher)).sum().item(),
        ]
    *totals, n = ranks.sum((*sums, len(rows)))
    n = max(int(n), 1)
    return HeldoutFit(
        {t: totals[2 * i] / n for i, t in enumerate(kinds)}, {t: totals[2 * i + 1] / n for i, t in enumerate(kinds)}, n
    )


# An epoch loses to the one kept when some task's held-out agreement is lower by more than
# this many standard errors (HeldoutFit.noise).
NOISE_SE = 2.0


def worse_task(fit, kept):
    """The task on which ``fit`` agrees with its targets worse than ``kept`` by more than the
    noise (:data:`NOISE_SE` standard errors of the difference of the two agreements), the
    furthest one; None when there is none.

    >>> kept = HeldoutFit({"a": 0.98, "b": 0.90}, {"a": 0.0, "b": 0.0}, 2000)
    >>> worse_task(HeldoutFit({"a": 0.99, "b": 0.89}, {"a": 0.0, "b": 0.0}, 2000), kept) is None  # within noise
    True
    >>> worse_task(HeldoutFit({"a": 0.99, "b": 0.85}, {"a": 0.0, "b": 0.0}, 2000), kept)
    'b'
    """
    shortfall = {t: (kept.agreement[t] - a) / math.hypot(kept.noise(t), fit.noise(t)) for t, a in fit.agreement.items()}
    task = max(shortfall, key=shortfall.get)
    return task if shortfall[task] > NOISE_SE else None


class BestEpoch:
    """The epoch a phase keeps (``training.keep_epoch``). ``per_task`` (the default): the
    latest, unless on some task it agrees with its targets on the held-out split worse than
    that task's best epoch so far, by more than the noise (:func:`worse_task` against
    ``peak``, each task's best agreement over the epochs offered). So no task is traded for
    the mean, and a difference within the noise (another CPU's float order) does not pick
    an earlier epoch over a later one. ``mean``: the epoch of the best mean agreement (lower
    mean excess loss breaks a tie); ``last``: the last epoch. The kept weights are on disk
    (``<phase>.best.pt``, so that ``--resume`` keeps choosing; a resumed phase starts its
    peaks from the kept epoch's). In a job every rank keeps the record and rank 0 alone
    (``writes``) saves the weights."""

    def __init__(self, path, resume, writes=True, rule="per_task"):
        self.path, self.writes, self.rule = path, writes, rule
        self.epoch, self.fit, self.peak = None, None, None
        if resume and path.exists():
            meta = load_checkpoint(path)["meta"]
            self.epoch, self.fit = meta["epoch"], HeldoutFit(**meta["fit"])
            self.peak = self.fit

    def offer(self, epoch, fit, net):
        """Keep ``epoch`` (its :class:`HeldoutFit` ``fit``) unless the rule passes it over; returns
        why it was passed over (the task it fell short on, or ``"mean"``), or None."""
        if self.peak is None:
            self.peak = fit
        else:
            best = {t: max(a, self.peak.agreement[t]) for t, a in fit.agreement.items()}
            self.peak = HeldoutFit(best, fit.excess, fit.rows)
        lost_on = self._passed_over(fit)
        if lost_on is None:
            self.epoch, self.fit = epoch, fit
            if self.writes:
                save_checkpoint(self.path, {"net": net}, epoch=epoch, fit=vars(fit))
        return lost_on

    def _passed_over(self, fit):
        if self.rule == "last" or self.fit is None:
            return None
        if self.rule == "mean":
            (a, e), (kept_a, kept_e) = fit.mean(), self.fit.mean()
            return None if (a, -e) > (kept_a, -kept_e) else "mean"
        return worse_task(fit, self.peak)

    def restore(self, net):
        if self.epoch is not None:
            restore(load_checkpoint(self.path), {"net": net})


def train_end_to_end(ctx, phase, net, data, indices, epochs, holdout=None, aux=None):
    """Train ``net`` end to end; with ``holdout`` (indices of the held-out split), keep the
    epoch that agrees best with the teachers there (never a labeled split).

    ``aux``: a feature baseline's training-only loss module
    (toolkit.method.feature_baselines.FeatureLoss): it trains beside ``net`` (checkpointed
    with it, not part of it), its loss on the trunk's block outputs adds to the output
    losses, and its terms' epoch means go to the run log (``feature_loss`` records)."""
    training, device = ctx.training, ctx.device
    net = unfreeze(net.to(device))
    kinds = task_kinds(net)
    best = BestEpoch(ctx.checkpoints / f"{phase}.best.pt", ctx.resume, ctx.ranks.is_main, training.keep_epoch)
    choose = holdout is not None and len(holdout) > 0

    def step(idx):
        features = None if aux is None else []
        out = net.forward_dict(to_tensor(data.inputs, idx, device), features)
        loss = sum(
            task_loss(kinds[name], logits, to_tensor(data.logits[name], idx, device), training)
            for name, logits in out.items()
        )
        return loss if aux is None else loss + aux(idx, features)

    def after_epoch(epoch):
        if aux is not None:
            ctx.log.write("feature_loss", phase=phase, epoch=epoch, **aux.epoch_means())
        if choose:
            fit = heldout_fit(net, data, holdout, device, ctx.ranks)
            agree, excess = fit.mean()
            lost_on = best.offer(epoch, fit, net)
            ctx.log.write(
                "heldout",
                phase=phase,
                epoch=epoch,
                agreement=agree,
                excess=excess,
                tasks=fit.agreement,
                rows=fit.rows,
                kept=lost_on is None,
                lost_on=lost_on,
            )

    modules, groups = {"net": net}, param_groups(net, training.head_lr_mult)
    if aux is not None:
        modules["aux"] = aux
        groups.append((list(aux.parameters()), 1.0))
    run_phase(
        ctx,
        Phase(phase, modules, groups, step, epochs, after_epoch=after_epoch if choose or aux is not None else None),
        indices,
    )
    if choose:
        best.restore(net)
        ctx.log.write("checkpoint", phase=phase, epoch=best.epoch)
    return net.eval()
