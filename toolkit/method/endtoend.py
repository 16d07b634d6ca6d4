"""End-to-end training of an assembled TargetNet on the teachers' outputs.

Used for the fine-tune (METHOD.md, step 4: all layers trainable, branches
included, the same output losses) and the baselines: multi-teacher KD (the same
final architecture trained end to end from the start, as KamalEngine and
torchdistill do) and the feature baselines, which add a training-only feature loss
(toolkit.method.feature_baselines), so that one command compares them under one harness.

Each keeps the epoch that agrees best with the teachers on the held-out part of
the unlabeled training split (lower excess loss breaks a tie); the labeled
evaluation data never chooses anything.
"""

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


@torch.no_grad()
def heldout_fit(net, data, indices, device, ranks=None):
    """(agreement, excess loss) with the teachers on held-out rows, each a mean over tasks:
    the share of same decisions at logit 0 / argmax, and the KL from each task's teacher.
    In a torchrun job (``ranks``) each rank scores its share of the rows (``Ranks.split``)
    and the sums are added up: every rank gets the numbers of the whole split."""
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
    return float(np.mean(totals[0::2]) / n), float(np.mean(totals[1::2]) / n)


class BestEpoch:
    """The epoch of a phase that agrees best with the teachers on held-out data (lower
    excess loss breaks a tie), its weights kept on disk (``<phase>.best.pt``, so that
    ``--resume`` keeps choosing among all epochs). In a job every rank keeps the score
    and rank 0 alone (``writes``) saves the weights."""

    def __init__(self, path, resume, writes=True):
        self.path, self.writes = path, writes
        self.epoch, self.score = None, None
        if resume and path.exists():
            meta = load_checkpoint(path)["meta"]
            self.epoch, self.score = meta["epoch"], (meta["agreement"], -meta["excess"])

    def offer(self, epoch, agreement, excess, net):
        if self.score is None or (agreement, -excess) > self.score:
            self.epoch, self.score = epoch, (agreement, -excess)
            if self.writes:
                save_checkpoint(self.path, {"net": net}, epoch=epoch, agreement=agreement, excess=excess)

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
    best = BestEpoch(ctx.checkpoints / f"{phase}.best.pt", ctx.resume, ctx.ranks.is_main)
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
            agree, excess = heldout_fit(net, data, holdout, device, ctx.ranks)
            ctx.log.write("heldout", phase=phase, epoch=epoch, agreement=agree, excess=excess)
            best.offer(epoch, agree, excess, net)

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
