"""The filter: a per-branch channel gate on the trunk's shared features.

METHOD.md: each task stream gets its own channel gate, squeeze-and-excitation
style, ``gate = sigmoid(W2 relu(W1 avgpool(h)))``, so each branch sees the
channels that matter to its tasks.

(ours) The gate is scaled by 2 and W2 starts at zero, so a new gate is exactly the
identity: a trunk initialised from a teacher starts as that teacher.

>>> import torch
>>> g = ChannelGate(8, reduction=4)
>>> h = torch.randn(2, 8, 5, 5)
>>> bool(torch.equal(g(h), h))
True
"""

import torch
from torch import nn


class ChannelGate(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)

    def weights(self, h):
        """Per-sample channel weights in (0, 2), shape (N, C)."""
        s = h.mean(dim=tuple(range(2, h.dim())))
        return 2 * torch.sigmoid(self.excite(torch.relu(self.squeeze(s))))

    def forward(self, h):
        w = self.weights(h)
        return h * w.view(*w.shape, *([1] * (h.dim() - 2)))
