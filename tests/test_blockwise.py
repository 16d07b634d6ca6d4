"""Block training: the held-out losses taken in the prefix pass equal those of a pass of their own."""

from types import SimpleNamespace

import numpy as np
import torch

from amalgam.toolkit.method.blockwise import HeldoutExcess, PrefixFeatures, heldout_excess
from amalgam.toolkit.teachers import SplitData


class Head(torch.nn.Module):
    """A stage branch reading a (N, 4) feature into two binary tasks' logits."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, h):
        y = self.linear(h)
        return {"left": y[:, 0], "right": y[:, 1]}


def test_heldout_losses_from_the_prefix_pass_equal_their_own_pass(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 1100  # more than two prefix chunks, the held-out rows spread over them
    inputs = rng.normal(size=(n, 3)).astype(np.float32)
    data = SplitData(
        inputs, {"left": rng.normal(size=n).astype(np.float32), "right": rng.normal(size=n).astype(np.float32)}
    )
    tasks = [SimpleNamespace(name="left", kind="binary"), SimpleNamespace(name="right", kind="binary")]
    teachers = [SimpleNamespace(name="t", tasks=tasks)]
    branches = {"t": SimpleNamespace(module=Head().eval())}
    block = torch.nn.Linear(3, 4).eval()
    holdout = np.sort(rng.choice(n, 110, replace=False))
    alone = heldout_excess(teachers, block, branches, inputs, data, holdout, "cpu")
    sums = HeldoutExcess(teachers, branches, data, holdout, "cpu")
    prefix = PrefixFeatures(tmp_path, inputs)
    prefix.extend(block, "cpu", visit=sums)
    together = sums.means()
    assert set(together) == {"left", "right"} and all(v > 0 for v in together.values())
    for task in alone:
        np.testing.assert_allclose(together[task], alone[task], rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(prefix.levels[-1], block(torch.from_numpy(inputs)).numpy(), rtol=1e-6, atol=1e-6)
