"""Block-by-block training (METHOD.md, step 2).

Stage ``l`` grows the trunk by block ``l``. Every teacher gets a stage branch
after block ``l``: a fresh channel gate, an adapter if needed, and the teacher's
own remaining layers, frozen (kept in eval mode: a converted layer in train mode
would switch BatchNorm to batch statistics). Block ``l`` and the gates learn from
the teachers' outputs on the chosen tasks, plus the feature hint against each
teacher's tap at boundary ``l``. An output-only teacher's stage branch is a fresh,
trainable head.

Blocks ``1..l-1`` are frozen during stage ``l``, so their output over the whole
dataset is computed once, when the previous stage ends, and kept on disk
(:class:`PrefixFeatures`): each step runs only block ``l`` and the branches, the
irreducible work. After the stage, the held-out excess loss per task is the
stage's row of the branch-out table; it comes from the same pass over the data
that caches the trained block's output for the next stage.
"""

import contextlib
from pathlib import Path

import numpy as np
import torch

from amalgam.runtime.files import atomic_path
from amalgam.toolkit.dist import Ranks
from amalgam.toolkit.method.checkpoint import load_checkpoint, restore
from amalgam.toolkit.method.loop import Phase, mark_phase, phase_results, run_phase, seed_phase
from amalgam.toolkit.method.losses import excess_loss, hint_loss, task_loss
from amalgam.toolkit.student.adapters import fit_adapter
from amalgam.toolkit.student.infer import to_tensor
from amalgam.toolkit.student.parts import make_branch
from amalgam.toolkit.student.targetnet import freeze

EVAL_BATCH = 512
FIT_SAMPLES = 1024


class PrefixFeatures:
    """The frozen trunk's output, block after block, as memory-mapped arrays on disk."""

    def __init__(self, root, inputs):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.levels = [inputs]

    @torch.no_grad()
    def extend(self, block, device, log=None, visit=None, ranks=None):
        """Add the output of ``block`` applied to the last level (eval mode); ``visit(rows, output)``
        sees each batch on the way (the held-out losses come from the same pass). In a job the
        ranks share the work: rank 0 sizes the file, each rank writes its batches (``EVAL_BATCH``
        rows, every ``world``-th) through the file, rank 0 renames it into place."""
        ranks = ranks or Ranks()
        block.eval()
        prev, n = self.levels[-1], len(self.levels[-1])
        path = self.root / f"prefix_{len(self.levels)}.npy"
        row = block(to_tensor(prev, np.arange(1), device)).cpu().numpy()
        with atomic_path(path) if ranks.is_main else contextlib.nullcontext() as tmp:
            tmp = ranks.broadcast(tmp)
            if ranks.is_main:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *row.shape[1:]))
            ranks.barrier()
            header = np.load(tmp, mmap_mode="r").offset
            starts = ranks.split(range(0, n, EVAL_BATCH))
            with open(tmp, "r+b") as f:  # through the file: written pages do not stay resident
                for start in log.progress(starts, f"caching block {len(self.levels)} output") if log else starts:
                    idx = np.arange(start, min(n, start + EVAL_BATCH))
                    y = block(to_tensor(prev, idx, device))
                    if visit is not None:
                        visit(idx, y)
                    f.seek(header + int(start) * row.nbytes)
                    f.write(np.ascontiguousarray(y.cpu().numpy(), dtype=np.float32).data)
            ranks.barrier()
        ranks.barrier()
        self.levels.append(np.load(path, mmap_mode="r"))


def stage_branches(teachers, block, trunk_shape, gate_reduction, trunk_source):
    """Each teacher's branch after trunk block ``block``; teacher layers frozen.

    ``trunk_source``: the teacher whose own features the trunk starts from (None
    for a random trunk); every other teacher's adapter gets a 1x1 conv."""
    out = {}
    for t in teachers:
        if not t.tasks:
            continue
        part = make_branch(t, block, trunk_shape, gate_reduction, project=t.name != trunk_source)
        if t.structured:
            freeze(part.module.body)
        out[t.name] = part
    return out


def branch_loss(t, branch, h, data, idx, block, training, device):
    """Output losses on the chosen tasks (+ feature hint) of one stage branch."""
    z = branch.features(h)
    out = branch.read(branch.body(z))
    loss = sum(
        task_loss(task.kind, out[task.name], to_tensor(data.logits[task.name], idx, device), training)
        for task in t.tasks
    )
    if training.hint_weight and t.structured:
        loss = loss + training.hint_weight * hint_loss(z, to_tensor(data.taps[(t.name, block)], idx, device))
    return loss


class HeldoutExcess:
    """Excess loss per task summed over the held-out rows of the block outputs it is shown."""

    def __init__(self, teachers, branches, data, indices, device, ranks=None):
        """``ranks``: in a job, each rank is shown its share of the rows; :meth:`means` gathers."""
        self.teachers, self.branches, self.data, self.device = teachers, branches, data, device
        self.ranks = ranks or Ranks()
        self.indices = np.asarray(indices)
        self.sums = {task.name: 0.0 for t in teachers for task in t.tasks}

    @torch.no_grad()
    def __call__(self, idx, h):
        """Add the held-out rows among ``idx`` (block output ``h``, row for row)."""
        rows = np.isin(idx, self.indices)
        if rows.all():
            self.add(idx, h)
        elif rows.any():
            self.add(idx[rows], h[torch.from_numpy(rows).to(h.device)])

    def add(self, idx, h):
        for t in self.teachers:
            if t.name not in self.branches:
                continue
            out = self.branches[t.name].module(h)
            for task in t.tasks:
                teacher = to_tensor(self.data.logits[task.name], idx, self.device)
                self.sums[task.name] += float(excess_loss(task.kind, out[task.name], teacher).sum())

    def means(self):
        totals = self.ranks.sum(self.sums.values())
        return {k: v / max(len(self.indices), 1) for k, v in zip(self.sums, totals)}


@torch.no_grad()
def heldout_excess(teachers, block_module, branches, features, data, indices, device, ranks=None):
    """Mean excess loss per task on held-out samples, after this stage (its own pass; each
    rank its share of the samples, the sums gathered)."""
    sums = HeldoutExcess(teachers, branches, data, indices, device, ranks)
    mine = sums.ranks.split(indices)
    for start in range(0, len(mine), EVAL_BATCH):
        idx = mine[start : start + EVAL_BATCH]
        sums(idx, block_module(to_tensor(features, idx, device)))
    return sums.means()


@torch.no_grad()
def fit_adapters(block, branches, teachers, features, data, indices, block_no, device):
    """Least-squares start for each structured branch's adapter (toolkit.student.adapters),
    on the block's output in train mode: what the stage's steps feed the adapter (a fresh
    BatchNorm's running statistics are not yet the data's)."""
    sample = np.sort(indices[:FIT_SAMPLES])
    h = block.train()(to_tensor(features, sample, device))
    for t in teachers:
        if t.name in branches and t.structured:
            branch = branches[t.name].module
            fit_adapter(branch.adapter, branch.gate(h), to_tensor(data.taps[(t.name, block_no)], sample, device))


def train_stage(
    ctx,
    block_no,
    block,
    teachers,
    prefix,
    data,
    train_idx,
    holdout_idx,
    gate_reduction,
    epochs,
    trunk_source=None,
    extend=False,
):
    """Stage ``block_no``: train ``block`` and its stage branches; return (branches, excess row).

    ``extend``: also add the trained block's output to ``prefix`` (the next stage's
    input), in the same pass over the data as the held-out losses."""
    phase = f"stage{block_no}"
    device, training = ctx.device, ctx.training
    seed_phase(ctx, phase)
    block.to(device)
    with torch.no_grad():
        trunk_shape = tuple(block.eval()(to_tensor(prefix.levels[-1], np.arange(1), device)).shape[1:])
    branches = stage_branches(teachers, block_no, trunk_shape, gate_reduction, trunk_source)
    fit_adapters(block, branches, teachers, prefix.levels[-1], data, train_idx, block_no, device)
    modules = {"block": block, **{f"branch_{k}": p.module.to(device) for k, p in branches.items()}}
    trainable = [block] + [p.module.gate for p in branches.values()] + [p.module.adapter for p in branches.values()]
    fresh_heads = [branches[t.name].module.body for t in teachers if t.name in branches and not t.structured]
    groups = [
        ([q for m in trainable for q in m.parameters()], 1.0),
        ([q for m in fresh_heads for q in m.parameters()], training.head_lr_mult),
    ]
    features = prefix.levels[-1]

    def step(idx):
        h = block(to_tensor(features, idx, device))
        return sum(
            branch_loss(t, branches[t.name].module, h, data, idx, block_no, training, device)
            for t in teachers
            if t.name in branches
        )

    done = phase_results(ctx, phase)
    if done is not None and "excess" in done:
        restore(load_checkpoint(ctx.checkpoints / f"{phase}.pt"), modules)
        ctx.log.say(f"{phase}: done in an earlier run, restored")
        if extend:
            prefix.extend(block, device, ctx.log, ranks=ctx.ranks)
        return branches, done["excess"]
    frozen = tuple(branches[t.name].module.body for t in teachers if t.name in branches and t.structured)
    run_phase(ctx, Phase(phase, modules, groups, step, epochs, frozen), train_idx)
    block.eval()
    for p in branches.values():
        p.module.eval()
    if extend:
        sums = HeldoutExcess(teachers, branches, data, holdout_idx, device, ctx.ranks)
        prefix.extend(block, device, ctx.log, visit=sums, ranks=ctx.ranks)
        excess = sums.means()
    else:
        excess = heldout_excess(teachers, block, branches, features, data, holdout_idx, device, ctx.ranks)
    mark_phase(ctx, phase, modules, epochs_done=epochs, excess=excess)
    ctx.log.write("stage", block=block_no, excess=excess)
    return branches, excess
