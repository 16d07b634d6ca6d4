"""Distillation losses on the chosen tasks (METHOD.md, step 2).

* binary tasks: BCE-with-logits against the teacher's probability ``sigmoid(z_T)``
  (``soft``) or its pseudo-label ``sigmoid(z_T) > 0.5`` (``hard``, as in KamalEngine's
  re-implementation of the paper); soft targets may be softened at a temperature T
  (both logits divided by T, the loss scaled by T^2 as in Hinton et al.'s KD; ours);
* multi-class tasks: KL divergence between the distributions softened at
  temperature T, scaled by T^2 (ours);
* feature hint: MSE between the gated trunk feature and the teacher's own tap at
  the same block boundary (ours).

Branch-out is judged on the *excess* loss: the KL divergence from the teacher's
distribution to the student's. For a binary task that is the soft BCE minus the
teacher targets' own entropy, so a task the teacher is unsure of does not look
hard to share (``excess_loss``).
"""

import torch
from torch.nn import functional as F

EPS = 1e-6


def binary_loss(student, teacher, targets="hard", temperature=1.0):
    """BCE to the teacher's pseudo-label (``hard``) or its probability at ``temperature`` (``soft``)."""
    if targets == "hard":
        return F.binary_cross_entropy_with_logits(student, (teacher > 0).to(student.dtype))
    t = temperature
    return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t


def multiclass_loss(student, teacher, temperature=2.0):
    t = temperature
    log_q = F.log_softmax(student / t, dim=-1)
    p = F.softmax(teacher / t, dim=-1)
    return F.kl_div(log_q, p, reduction="batchmean") * t * t


def task_loss(kind, student, teacher, training):
    """One task's output loss under ``training`` (a TrainingConfig: ``targets``, ``temperature``
    for multi-class tasks, ``binary_temperature`` for binary soft targets)."""
    if kind == "binary":
        return binary_loss(student, teacher, training.targets, training.binary_temperature)
    return multiclass_loss(student, teacher, training.temperature)


def hint_loss(feature, tap):
    return F.mse_loss(feature, tap)


def excess_loss(kind, student, teacher):
    """Per-sample KL(teacher || student) in nats, shape (N,): zero iff they agree."""
    if kind == "binary":
        p = torch.sigmoid(teacher).clamp(EPS, 1 - EPS)
        q = torch.sigmoid(student).clamp(EPS, 1 - EPS)
        return p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    log_p = F.log_softmax(teacher, dim=-1)
    log_q = F.log_softmax(student, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)
