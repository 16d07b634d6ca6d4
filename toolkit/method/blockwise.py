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
stage's row of the branch-out table.
"""

from pathlib import Path

import numpy as np
import torch

from runtime.files import atomic_path
from toolkit.method.checkpoint import load_checkpoint, restore
from toolkit.method.loop import mark_phase, phase_results, run_phase, seed_phase
from toolkit.method.losses import excess_loss, hint_loss, task_loss
from toolkit.student.adapters import fit_adapter
from toolkit.student.infer import to_tensor
from toolkit.student.parts import make_branch
from toolkit.student.targetnet import freeze

EVAL_BATCH = 512
FIT_SAMPLES = 1024


class PrefixFeatures:
    """The frozen trunk's output, block after block, as memory-mapped arrays on disk."""

    def __init__(self, root, inputs):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.levels = [inputs]

    @torch.no_grad()
    def extend(self, block, device, log=None):
        """Add the output of ``block`` applied to the last level (eval mode)."""
        block.eval()
        prev, n = self.levels[-1], len(self.levels[-1])
        path = self.root / f"prefix_{len(self.levels)}.npy"
        out = None
        starts = range(0, n, EVAL_BATCH)
        with atomic_path(path) as tmp:
            for start in (log.progress(starts, f"caching block {len(self.levels)} output") if log else starts):
                idx = np.arange(start, min(n, start + EVAL_BATCH))
                y = block(to_tensor(prev, idx, device)).cpu().numpy()
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *y.shape[1:]))
                out[idx[0]:idx[-1] + 1] = y
            out.flush()
            del out
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
    loss = sum(task_loss(task.kind, out[task.name], to_tensor(data.logits[task.name], idx, device),
                         training.targets, training.temperature) for task in t.tasks)
    if training.hint_weight and t.structured:
        loss = loss + training.hint_weight * hint_loss(z, to_tensor(data.taps[(t.name, block)], idx, device))
    return loss


@torch.no_grad()
def heldout_excess(teachers, block_module, branches, features, data, indices, device):
    """Mean excess loss per task on held-out samples, after this stage."""
    sums = {task.name: 0.0 for t in teachers for task in t.tasks}
    for start in range(0, len(indices), EVAL_BATCH):
        idx = indices[start:start + EVAL_BATCH]
        h = block_module(to_tensor(features, idx, device))
        for t in teachers:
            if t.name not in branches:
                continue
            out = branches[t.name].module(h)
            for task in t.tasks:
                teacher = to_tensor(data.logits[task.name], idx, device)
                sums[task.name] += float(excess_loss(task.kind, out[task.name], teacher).sum())
    return {k: v / max(len(indices), 1) for k, v in sums.items()}


@torch.no_grad()
def fit_adapters(block, branches, teachers, features, data, indices, block_no, device):
    """Least-squares start for each structured branch's adapter (toolkit.student.adapters)."""
    sample = np.sort(indices[:FIT_SAMPLES])
    h = block.eval()(to_tensor(features, sample, device))
    for t in teachers:
        if t.name in branches and t.structured:
            branch = branches[t.name].module
            fit_adapter(branch.adapter, branch.gate(h), to_tensor(data.taps[(t.name, block_no)], sample, device))


def train_stage(ctx, block_no, block, teachers, prefix, data, train_idx, holdout_idx, gate_reduction, epochs,
                trunk_source=None):
    """Stage ``block_no``: train ``block`` and its stage branches; return (branches, excess row)."""
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
    groups = [([q for m in trainable for q in m.parameters()], 1.0),
              ([q for m in fresh_heads for q in m.parameters()], training.head_lr_mult)]
    features = prefix.levels[-1]

    def train_mode():
        for k, p in branches.items():
            p.module.train()
            if next(t for t in teachers if t.name == k).structured:
                p.module.body.eval()
        block.train()

    def step(idx):
        h = block(to_tensor(features, idx, device))
        return sum(branch_loss(t, branches[t.name].module, h, data, idx, block_no, training, device)
                   for t in teachers if t.name in branches)

    done = phase_results(ctx, phase)
    if done is not None and "excess" in done:
        restore(load_checkpoint(ctx.checkpoints / f"{phase}.pt"), modules)
        ctx.log.say(f"{phase}: done in an earlier run, restored")
        return branches, done["excess"]
    run_phase(ctx, phase, modules, groups, step, train_idx, epochs, train_mode)
    block.eval()
    for p in branches.values():
        p.module.eval()
    excess = heldout_excess(teachers, block, branches, features, data, holdout_idx, device)
    mark_phase(ctx, phase, modules, epochs_done=epochs, excess=excess)
    ctx.log.write("stage", block=block_no, excess=excess)
    return branches, excess
