"""The block-training part of `make bench`: one epoch per stage, three ways.

* ``cached``: the toolkit's own stages (toolkit.method.blockwise.train_stage over
  PrefixFeatures): teacher targets read from the target cache, the frozen earlier
  blocks' output computed once per stage and kept on disk;
* ``eager``: what KamalEngine or torchdistill do: the teachers, converted to PyTorch
  (runtime.convert.to_torch), run on every batch for their logits and boundary
  features, and the frozen blocks 1..l-1 run forward on every batch; nothing cached;
* ``irreducible``: block l and the stage branches' forward/backward and the
  optimizer step alone, every input (block l's input, targets, features) already
  in memory.

All three train the same modules (block l, each teacher's stage branch: gate,
adapter and the teacher's own frozen remaining layers) with the same loss
(toolkit.method.blockwise.branch_loss) and batch size.
"""

import copy
import time

import numpy as np
import torch

from amalgam.runtime.convert import to_torch
from amalgam.runtime.taps import add_taps
from amalgam.toolkit.data import split_holdout
from amalgam.toolkit.method.blockwise import PrefixFeatures, branch_loss, stage_branches, train_stage
from amalgam.toolkit.method.loop import Phase, batches, run_phase, seed_phase
from amalgam.toolkit.method.optim import make_optimizer
from amalgam.toolkit.student.infer import to_tensor
from amalgam.toolkit.student.parts import trunk_blocks, trunk_graphs
from amalgam.toolkit.teachers import SplitData


def cached(ctx, config, teachers, data, root):
    """Seconds of the toolkit's block training, all stages (prefix caching included), and the trained blocks."""
    t = ctx.training
    train_idx, holdout_idx = split_holdout(len(data), config.data.holdout, t.seed)
    reference = next(tg for tg in teachers if tg.name == config.student.reference)
    trunk = trunk_graphs(reference)
    prefix = PrefixFeatures(root / "prefix", data.inputs)
    start = time.perf_counter()
    blocks = [b.to(ctx.device) for b in trunk_blocks(trunk, config.student.init, config.student.width, t.seed)]
    for block_no, block in enumerate(blocks, start=1):
        train_stage(
            ctx,
            block_no,
            block,
            teachers,
            prefix,
            data,
            train_idx,
            holdout_idx,
            config.student.gate_reduction,
            1,
            trunk_source=reference.name,
            extend=block_no < len(trunk),
        )
    return time.perf_counter() - start, blocks, prefix, train_idx


def eager_teachers(teachers):
    """Each teacher as a torch module returning its outputs followed by its boundary features."""
    out = {}
    for tg in teachers:
        taps = [b.name for b in tg.boundaries]
        model = add_taps(tg.graph, taps)
        names = [o.name for o in model.graph.output]
        out[tg.name] = (to_torch(model).eval(), names)
    return out


@torch.no_grad()
def eager_targets(teachers, runners, x, block_no):
    """One batch's SplitData (logits of the chosen tasks, taps at boundary ``block_no``) from the teachers run now."""
    logits, taps = {}, {}
    for tg in teachers:
        module, names = runners[tg.name]
        found = dict(zip(names, module(x)))
        for task in tg.tasks:
            logits[task.name] = _task_logits(found[task.output], task).numpy()
        if tg.structured:
            taps[(tg.name, block_no)] = found[tg.boundary(block_no).name].numpy()
    return SplitData(x.numpy(), logits, taps)


def _task_logits(output, task):
    if task.kind == "binary":
        return output[:, task.index] if task.index is not None else output.reshape(len(output))
    return output[:, slice(*task.slice)] if task.slice else output


def stage_modules(ctx, config, teachers, block, block_no, x_sample, reference):
    branches = stage_branches(
        teachers, block_no, tuple(block(x_sample).shape[1:]), config.student.gate_reduction, reference
    )
    trainable = [block] + [p.module.gate for p in branches.values()] + [p.module.adapter for p in branches.values()]
    return branches, [([q for m in trainable for q in m.parameters()], 1.0)]


def train_mode(block, branches):
    block.train()
    for p in branches.values():
        p.module.train()
        p.module.body.eval()


def eager(ctx, config, teachers, data, blocks, train_idx):
    """Seconds of the same stages with teachers and frozen blocks run at every step."""
    runners = eager_teachers(teachers)
    reference = config.student.reference
    inputs = np.asarray(data.inputs)
    start = time.perf_counter()
    for block_no in range(1, len(blocks) + 1):
        seed_phase(ctx, f"eager{block_no}")
        frozen = torch.nn.Sequential(*[copy.deepcopy(b).eval() for b in blocks[: block_no - 1]])
        block = copy.deepcopy(blocks[block_no - 1])
        with torch.no_grad():
            sample = frozen(to_tensor(inputs, np.arange(1), ctx.device))
        branches, groups = stage_modules(ctx, config, teachers, block, block_no, sample, reference)

        def step(idx, block=block, frozen=frozen, branches=branches, block_no=block_no):
            x = to_tensor(inputs, idx, ctx.device)
            batch = eager_targets(teachers, runners, x, block_no)
            with torch.no_grad():
                h0 = frozen(x)
            h = block(h0)
            at = np.arange(len(idx))
            return sum(
                branch_loss(t, branches[t.name].module, h, batch, at, block_no, ctx.training, ctx.device)
                for t in teachers
                if t.name in branches
            )

        modules = {"block": block, **{f"branch_{k}": p.module for k, p in branches.items()}}
        frozen = tuple(p.module.body for p in branches.values())
        run_phase(ctx, Phase(f"eager{block_no}", modules, groups, step, 1, frozen), train_idx)
    return time.perf_counter() - start


def irreducible(ctx, config, teachers, data, blocks, prefix, train_idx):
    """Seconds of block l and the stage branches' forward/backward and step alone, inputs in memory."""
    t = ctx.training
    logits = {k: np.asarray(v, dtype=np.float32) for k, v in data.logits.items()}
    total = 0.0
    for block_no in range(1, len(blocks) + 1):
        features = np.array(prefix.levels[block_no - 1], dtype=np.float32)
        taps = {k: np.array(v, dtype=np.float32) for k, v in data.taps.items() if k[1] == block_no}
        memory = SplitData(features, logits, taps)
        block = copy.deepcopy(blocks[block_no - 1])
        torch.manual_seed(t.seed)
        branches, groups = stage_modules(
            ctx, config, teachers, block, block_no, torch.from_numpy(features[:1]), config.student.reference
        )
        optimizer = make_optimizer(groups, t)
        train_mode(block, branches)
        order = list(batches(train_idx, t.batch_size, t.seed))
        xs = torch.from_numpy(features)
        start = time.perf_counter()
        for idx in order:
            h = block(xs[idx])
            loss = sum(
                branch_loss(tg, branches[tg.name].module, h, memory, idx, block_no, t, ctx.device)
                for tg in teachers
                if tg.name in branches
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        total += time.perf_counter() - start
    return total
