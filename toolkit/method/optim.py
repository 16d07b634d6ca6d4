"""Optimisers and learning-rate schedules, built from ``training:`` in the config.

Branch bodies (the teachers' layers after the branch point, heads included) may
take a larger rate (``head_lr_mult``; KamalEngine's PyTorch re-implementation of the paper used 10x).
The schedule steps once per batch: ``cosine`` decays to zero over the phase,
``step`` multiplies the rate by ``step_gamma`` every ``step_epochs`` epochs,
``constant`` keeps it.
"""

import math

import torch


def make_optimizer(groups, training):
    """``groups``: list of (parameters, lr multiplier); empty groups are dropped."""
    param_groups = [
        {"params": [p for p in params if p.requires_grad], "lr": training.lr * mult} for params, mult in groups
    ]
    param_groups = [g for g in param_groups if g["params"]]
    if training.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
        )
    return torch.optim.Adam(param_groups, lr=training.lr, weight_decay=training.weight_decay)


def make_schedule(optimizer, training, steps_per_epoch, epochs):
    total = max(1, int(steps_per_epoch * epochs))
    kind = training.schedule

    def factor(step):
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if kind == "step":
            return training.step_gamma ** (step // (steps_per_epoch * training.step_epochs))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
