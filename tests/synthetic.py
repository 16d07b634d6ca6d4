"""Small real data and real teachers for the learning-side tests.

Images: 10 classes of 16x16 grey pictures, each class a fixed random smooth
prototype, plus noise and a random shift, so a small CNN learns them in seconds.
Teachers: PlainCNNs trained with labels on binary "is class k" tasks, exported
to ONNX with the project's exporter.
"""

import numpy as np
import torch
from torch import nn

from tests.builders import PlainCNN

SIZE = 16


def make_images(n, seed=0, classes=10, noise=1.6):
    rng = np.random.default_rng(1234)  # prototypes are the same for every split
    protos = rng.normal(size=(classes, 1, 8, 8)).astype(np.float32)
    protos = np.kron(protos, np.ones((1, 1, 2, 2), np.float32))  # 16x16, smooth
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = protos[labels] + noise * rng.normal(size=(n, 1, SIZE, SIZE)).astype(np.float32)
    shifts = rng.integers(-1, 2, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        x[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
    x = np.clip(0.5 + x / 6, 0, 1)  # one fixed scale for every split
    return (x * 255).astype(np.uint8), labels


def save_npz(path, images, labels):
    np.savez(path, images=images, labels=labels)
    return path


def train_teacher(classes, images, labels, epochs=3, seed=0, channels=(8, 16, 24, 32)):
    """A PlainCNN whose output k is the logit of "is class classes[k]"."""
    torch.manual_seed(seed)
    model = PlainCNN(channels=channels, n_out=len(classes))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(np.stack([labels == c for c in classes], 1).astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
