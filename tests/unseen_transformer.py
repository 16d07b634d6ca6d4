"""A transformer no other test uses, built from torch.nn's own parts: a convolutional patch
embedding (4x4 patches of a 16x16 image), ``nn.TransformerEncoder`` (pre-norm, GELU, batch
first), a class token and a distillation token *after* the patches (as DeiT keeps a
distillation token, but at the other end), a final LayerNorm and a head on both extra tokens.
``amalgam export-teacher torch tests.unseen_transformer:encoder`` builds it (random weights,
seed 0)."""

import torch
from torch import nn

DIM, LAYERS, PATCH, SIZE = 32, 3, 4, 16


class Encoder(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.extra = nn.Parameter(torch.randn(1, 2, DIM) * 0.02)
        self.position = nn.Parameter(torch.randn(1, (SIZE // PATCH) ** 2 + 2, DIM) * 0.02)
        layer = nn.TransformerEncoderLayer(
            DIM, 2, 2 * DIM, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(2 * DIM, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens, self.extra.expand(x.shape[0], -1, -1)], dim=1) + self.position
        tokens = self.norm(self.encoder(tokens))
        return self.head(tokens[:, -2:].flatten(1))


def encoder():
    torch.manual_seed(0)
    return Encoder().eval()
