"""One training phase: epochs over shuffled indices, a checkpoint after each.

Every phase (a block-training stage, the fine-tune, the KD baseline) runs
through :func:`run_phase`. Its shuffling depends only on (seed, phase, epoch), and
it saves modules, optimiser, schedule and torch's RNG after every epoch, so a killed
run resumed with ``--resume`` (or restarted by ``torchrun --max-restarts``) redoes at
most the epoch it was in and ends with the same numbers as an uninterrupted one.

In a torchrun job every rank draws the same global batches (the sampler's state is
(seed, phase, epoch)) and trains on its share (``Ranks.shard``) with the trainable
parameters' gradients averaged by DDP; rank 0 writes the checkpoints.
"""

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from amalgam.toolkit.config import TrainingConfig
from amalgam.toolkit.dist import Ranks
from amalgam.toolkit.method.checkpoint import load_checkpoint, restore, save_checkpoint
from amalgam.toolkit.method.optim import make_optimizer, make_schedule
from amalgam.toolkit.runlog import RunLog


@dataclass
class LoopContext:
    training: TrainingConfig
    device: torch.device
    log: RunLog
    checkpoints: Path
    resume: bool
    ranks: Ranks = field(default_factory=Ranks)  # this process in a torchrun job (world size 1 alone)


def phase_seed(seed, phase, epoch=0):
    """A seed for (run seed, phase name, epoch), stable across processes."""
    return (seed * 1_000_003 + zlib.crc32(phase.encode()) + epoch * 7919) % (2**31)


def seed_phase(ctx, phase):
    """Seed torch before a phase builds its fresh modules (gates, heads, random blocks)."""
    torch.manual_seed(phase_seed(ctx.training.seed, phase))


def batches(indices, batch_size, seed):
    order = np.random.default_rng(seed).permutation(indices)
    for start in range(0, len(order), batch_size):
        yield np.sort(order[start : start + batch_size])


@dataclass
class Phase:
    """One training phase as data: a block stage (METHOD.md step 2), the fine-tune
    (step 4) or the KD baseline all run through :func:`run_phase`.

    ``modules``: what the checkpoint holds, by name; ``groups``: (parameters, learning
    rate multiplier) pairs; ``frozen``: modules kept in eval mode while the rest train
    (a stage's frozen teacher layers: BatchNorm keeps its running statistics);
    ``step(idx)``: the loss of one batch; ``after_epoch(n)``, if given, runs after
    epoch ``n`` (1-based), before its checkpoint.

    >>> from torch import nn
    >>> net, body = nn.Linear(2, 1), nn.BatchNorm1d(1)
    >>> phase = Phase("demo", {"net": net, "body": body}, [(list(net.parameters()), 1.0)],
    ...               step=None, epochs=1, frozen=(body,))
    >>> phase.train_mode(); net.training, body.training
    (True, False)
    """

    name: str
    modules: dict
    groups: list
    step: Callable
    epochs: int
    frozen: tuple = ()
    after_epoch: Callable | None = None

    def train_mode(self):
        for module in self.modules.values():
            module.train()
        for module in self.frozen:
            module.eval()


def run_phase(ctx, spec: Phase, indices):
    """Train ``spec`` for its epochs over ``indices``; returns (checkpoint path, its meta)."""
    phase, modules, groups, step, epochs = spec.name, spec.modules, spec.groups, spec.step, spec.epochs
    t = ctx.training
    optimizer = make_optimizer(groups, t)
    steps = math.ceil(len(indices) / t.batch_size)
    schedule = make_schedule(optimizer, t, steps, epochs)
    path = ctx.checkpoints / f"{phase}.pt"
    done, meta = 0, {}
    if ctx.resume and path.exists():
        meta = restore(load_checkpoint(path), modules, optimizer, schedule)
        done = meta["epochs_done"]
        if "rng" in meta:
            torch.set_rng_state(meta["rng"])
        if done:
            ctx.log.say(f"{phase}: resumed after epoch {done}/{epochs}")
    ranks = ctx.ranks
    trainable = {k: m for k, m in modules.items() if any(q.requires_grad for q in m.parameters())}
    shared_step = ranks.data_parallel(trainable, step)
    for epoch in range(done, epochs):
        spec.train_mode()
        total, count = 0.0, 0
        bar = ctx.log.progress(
            batches(indices, t.batch_size, phase_seed(t.seed, phase, epoch)),
            f"{phase} epoch {epoch + 1}/{epochs}",
            total=steps,
        )
        for idx in bar:
            idx = ranks.shard(idx)
            loss = shared_step(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        total, count = ranks.sum((total, count))
        ctx.log.write("epoch", phase=phase, epoch=epoch + 1, loss=total / max(count, 1))
        if spec.after_epoch is not None:
            spec.after_epoch(epoch + 1)
        meta = {"epochs_done": epoch + 1, "sampler": {"seed": t.seed, "phase": phase, "epoch": epoch + 1}}
        if ranks.is_main:
            save_checkpoint(path, modules, optimizer, schedule, rng=torch.get_rng_state(), **meta)
        ranks.barrier()
    return path, meta


def mark_phase(ctx, phase, modules, **meta):
    """Save a phase's final state with extra results (e.g. its held-out losses); rank 0 writes."""
    if ctx.ranks.is_main:
        save_checkpoint(ctx.checkpoints / f"{phase}.pt", modules, **meta)
    ctx.ranks.barrier()


def phase_results(ctx, phase):
    """The meta of a finished phase's checkpoint, or None."""
    path = ctx.checkpoints / f"{phase}.pt"
    return load_checkpoint(path)["meta"] if ctx.resume and path.exists() else None
