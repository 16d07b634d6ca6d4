"""The two teachers' architectures, as factories for `amalgam export-teacher torch
samples.vit_cnn.models:vit --weights ...` (and the training script): a small
torchvision VisionTransformer (32x32 images, 4x4 patches: an 8x8 grid and a class
token) and a small CNN, each with five logits."""

import torchvision
from torch import nn

SIZE = 32
VIT = dict(image_size=SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=5)
CHANNELS = (16, 32, 64, 128)


def vit():
    """torchvision's VisionTransformer at VIT's size, its zero head made random (so training starts from real logits)."""
    model = torchvision.models.VisionTransformer(**VIT)
    nn.init.normal_(model.heads.head.weight, std=VIT["hidden_dim"] ** -0.5)
    return model


def cnn():
    """conv3x3-BN-ReLU blocks on RGB (max-pool between them, strides 1, 2, 4, 8), global average pool, 5 logits."""
    widths = (3, *CHANNELS)
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.MaxPool2d(2)] if i else []
        layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS[-1], 5))


FACTORIES = {"vit": vit, "cnn": cnn}
