"""Distillation losses: binary soft targets at a temperature (training.binary_temperature)."""

import torch

from amalgam.toolkit.config.schema import TrainingConfig
from amalgam.toolkit.method.losses import binary_loss, task_loss


def _grad(student, teacher, **kw):
    s = student.clone().requires_grad_(True)
    binary_loss(s, teacher, **kw).backward()
    return s.grad


def test_soft_binary_loss_is_smallest_where_the_student_matches_the_teacher():
    teacher = torch.tensor([4.0, -2.0, 0.5, -6.0])
    for t in (1.0, 2.0, 4.0):
        assert torch.allclose(_grad(teacher, teacher, targets="soft", temperature=t), torch.zeros(4), atol=1e-7)
        off = teacher + torch.tensor([1.0, -1.0, 1.0, 1.0])
        assert binary_loss(off, teacher, "soft", t) > binary_loss(teacher, teacher, "soft", t)


def test_temperature_softens_the_target_and_scales_the_gradient_by_t():
    # d/dz_s of T^2 BCE(z_s / T, sigmoid(z_t / T)) = T (sigmoid(z_s / T) - sigmoid(z_t / T)):
    # for a teacher at +6 the target falls from 0.998 (T=1) to 0.82 (T=4)
    teacher, student = torch.tensor([6.0]), torch.tensor([0.0])
    g1 = _grad(student, teacher, targets="soft", temperature=1.0).abs().item()
    g4 = _grad(student, teacher, targets="soft", temperature=4.0).abs().item()
    assert abs(g1 - (torch.sigmoid(teacher) - 0.5).item()) < 1e-6
    assert abs(g4 - 4 * (torch.sigmoid(teacher / 4) - 0.5).item()) < 1e-6
    assert g4 != g1


def test_task_loss_reads_the_training_config():
    teacher, student = torch.tensor([2.0, -3.0]), torch.tensor([0.5, 0.5])
    hard = TrainingConfig(targets="hard")
    soft2 = TrainingConfig(targets="soft", binary_temperature=2.0)
    assert torch.isclose(
        task_loss("binary", student, teacher, hard), binary_loss(student, torch.tensor([1e4, -1e4]), "soft")
    )
    assert torch.isclose(task_loss("binary", student, teacher, soft2), binary_loss(student, teacher, "soft", 2.0))
