"""The epoch a phase keeps (toolkit.method.endtoend.BestEpoch): the latest, unless some task's
held-out agreement falls short of that task's best epoch by more than the noise."""

import torch

from amalgam.toolkit.method.checkpoint import load_checkpoint
from amalgam.toolkit.method.endtoend import BestEpoch, HeldoutFit, heldout_fit

ROWS = 2000  # agreement 0.98 on 2000 rows: one standard error is 0.0031, of a difference of two 0.0044


def fit(a, b):
    return HeldoutFit({"a": a, "b": b}, {"a": 0.01, "b": 0.02}, ROWS)


def offers(tmp_path, fits, resume=False, rule="per_task"):
    best = BestEpoch(tmp_path / "phase.best.pt", resume, rule=rule)
    lost = [best.offer(epoch, f, torch.nn.Linear(2, 1)) for epoch, f in enumerate(fits, start=1)]
    return best, lost


def test_the_latest_epoch_within_the_noise_is_kept(tmp_path):
    """Epoch 3 agrees a little less on both tasks than epoch 2 (less than two standard errors):
    mean agreement would pick epoch 2, a coin flip of float order; the later epoch is kept."""
    best, lost = offers(tmp_path, [fit(0.970, 0.900), fit(0.981, 0.912), fit(0.979, 0.910)])
    assert best.epoch == 3 and lost == [None, None, None]


def test_no_task_is_traded_for_the_mean(tmp_path):
    """Epoch 3 has the best mean, bought with task b's agreement beyond the noise: not kept."""
    best, lost = offers(tmp_path, [fit(0.960, 0.930), fit(0.970, 0.932), fit(0.990, 0.915)])
    assert sum(fit(0.990, 0.915).agreement.values()) > sum(fit(0.970, 0.932).agreement.values())
    assert best.epoch == 2 and lost == [None, None, "b"]
    assert load_checkpoint(tmp_path / "phase.best.pt")["meta"]["epoch"] == 2


def test_the_mean_and_last_rules_keep_the_old_choices(tmp_path):
    """training.keep_epoch: mean (the best mean agreement, as before per_task) and last."""
    fits = [fit(0.960, 0.930), fit(0.990, 0.915), fit(0.970, 0.932)]
    best, lost = offers(tmp_path, fits, rule="mean")
    assert best.epoch == 2 and lost == [None, None, "mean"]
    best, lost = offers(tmp_path / "x", fits, rule="last")
    assert best.epoch == 3 and lost == [None, None, None]


def test_a_slow_slide_does_not_creep_past_a_task_s_peak(tmp_path):
    """Each epoch within the noise of the one before, but the last ones beyond it from task a's peak."""
    slide = [fit(0.980 - 0.003 * i, 0.900) for i in range(6)]  # a's noise (difference of two): 0.0044-0.0051
    best, lost = offers(tmp_path, slide)
    assert best.epoch == 4 and lost == [None, None, None, None, "a", "a"]


def test_resume_reads_the_kept_epoch_back(tmp_path):
    offers(tmp_path, [fit(0.97, 0.90), fit(0.98, 0.91)])
    again = BestEpoch(tmp_path / "phase.best.pt", resume=True)
    assert again.epoch == 2 and again.fit.agreement == {"a": 0.98, "b": 0.91}
    assert again.offer(3, fit(0.96, 0.91), torch.nn.Linear(2, 1)) == "a"


def test_heldout_fit_counts_each_task_on_the_rows_given():
    """A real net's per-task agreement and excess loss, against targets it matches exactly on one task."""
    import numpy as np

    from amalgam.toolkit.student.parts import build_branch
    from amalgam.toolkit.student.targetnet import TargetNet, TaskSlot
    from amalgam.toolkit.teachers.targets import SplitData

    torch.manual_seed(0)
    inputs = np.random.default_rng(0).random((50, 1, 6, 6), dtype=np.float32)
    slots = [TaskSlot("a", "binary", 0, index=0), TaskSlot("b", "binary", 0, index=1)]
    branch = build_branch({"gate": [4, 2], "adapter": None, "fresh_head": [4, 2]}, None, slots)
    block = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
    net = TargetNet([block], {"T@1": branch}, {"T@1": 1}, ["a", "b"]).eval()
    with torch.no_grad():
        own = net.forward_dict(torch.from_numpy(inputs))
    logits = {"a": own["a"].numpy(), "b": -own["b"].numpy() - 1e-3}  # b: every decision the other way
    result = heldout_fit(net, SplitData(inputs, logits), np.arange(10, 50), "cpu")
    assert result.rows == 40 and result.agreement == {"a": 1.0, "b": 0.0}
    assert result.excess["a"] < 1e-6 < result.excess["b"]
