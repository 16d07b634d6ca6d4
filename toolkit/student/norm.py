"""Normalisation for a randomly initialised trunk (``student.init: random``, ours).

A teacher exported in eval mode has its BatchNorm folded into the convolutions,
so its converted blocks are plain conv stacks. Re-initialised with PyTorch's
default init, such a stack shrinks the signal about twofold per block (FM demo:
feature std 0.25 after block 1, 0.02 after block 4), and block-wise stages then
feed the frozen teacher tails features far below the scale they were trained on.

:func:`add_batchnorm` puts a BatchNorm2d after every Conv2d of a block that has
none, and :func:`kaiming_init` draws the convolutions for ReLU nets (He et al.,
2015, as torchvision's ResNets do). Both are free at inference: the export folds
each BatchNorm back into its convolution.
"""

import torch
from torch import nn

from amalgam.toolkit.student.width import replace_module


def add_batchnorm(block):
    """``block`` with each Conv2d followed by a fresh BatchNorm2d (unchanged if it has BatchNorm)."""
    if any(isinstance(m, nn.BatchNorm2d) for m in block.modules()):
        return block
    for name, module in list(block.named_modules()):
        if isinstance(module, nn.Conv2d):
            replace_module(block, name, nn.Sequential(module, nn.BatchNorm2d(module.out_channels)))
    return block


def kaiming_init(module, seed):
    """Re-initialise every layer of ``module``: convolutions by He init, the rest by their defaults."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    torch.random.set_rng_state(gen_state)
    return module
