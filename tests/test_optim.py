import pytest
import torch

from amalgam.toolkit.config import TrainingConfig
from amalgam.toolkit.method.optim import make_optimizer, make_schedule


def _rates(schedule, steps_per_epoch=5, epochs=6, **training):
    t = TrainingConfig(lr=0.1, schedule=schedule, **training)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([([w], 1.0)], t)
    sched = make_schedule(opt, t, steps_per_epoch, epochs)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_step_schedule_decays_every_step_epochs():
    rates = _rates("step", step_epochs=2, step_gamma=0.5)
    assert rates[0] == rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.05) and rates[20] == pytest.approx(0.025)


def test_cosine_decays_to_zero_and_constant_stays():
    rates = _rates("cosine")
    assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.001 and sorted(rates, reverse=True) == rates
    assert all(r == pytest.approx(0.1) for r in _rates("constant"))


def test_head_rate_multiplier_applies_to_its_group():
    t = TrainingConfig(lr=0.01, optimizer="sgd")
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([([a], 1.0), ([b], 10.0), ([], 3.0)], t)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.01), pytest.approx(0.1)]
