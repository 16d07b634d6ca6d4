"""Width multiplier of a re-initialised trunk (``student.width``, ours).

Every convolution of the trunk blocks gets ``scaled(channels, width)`` (width x
channels, in 8s) output channels (and matching inputs), BatchNorm layers follow;
the image's channels stay as they are. Branches keep their teachers' widths: the
adapters' 1x1 convs map the narrower trunk onto them. Only layers whose shapes are
known can be scaled: a trunk block holding other per-channel weights is refused.
(``student.width: auto`` chooses the width: toolkit.method.width_choice.)
"""

from torch import nn

from amalgam.runtime.errors import ConfigError

SCALABLE = (nn.Conv2d, nn.BatchNorm2d)
SHAPELESS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
)


CHANNEL_MULTIPLE = 8


def scaled(channels, width):
    """``width`` x ``channels`` rounded to a multiple of 8, at least 8 and at most ``channels``
    (MobileNet's ``make_divisible``: never more than 10% under). ONNX Runtime's blocked
    convolution kernels take channels in 8s: two 3x3 convs of 179 channels ran 2.2x slower
    than of 176 or 184 (batch 64, 8x8, this CPU), and ResNet-18 at width 0.7 with plain
    rounding (45, 90, 179, 358) ran 3.5x slower than the full-width teacher.

    >>> [scaled(c, 0.7) for c in (64, 128, 256, 512)]
    [48, 88, 176, 360]
    >>> scaled(16, 0.25), scaled(4, 0.5), scaled(179, 1.0)
    (8, 4, 179)
    """
    if width == 1.0:
        return channels
    m = CHANNEL_MULTIPLE
    c = max(m, int(channels * width + m / 2) // m * m)
    if c < 0.9 * channels * width:
        c += m
    return min(c, channels)


def replace_module(root, dotted, module):
    """Put ``module`` at the dotted path ``dotted`` inside ``root``."""
    *parents, leaf = dotted.split(".")
    parent = root
    for p in parents:
        parent = getattr(parent, p)
    setattr(parent, leaf, module)


def _check(block, index):
    for name, module in block.named_modules():
        if module is block or isinstance(module, SCALABLE) or len(list(module.children())):
            continue
        has_state = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if has_state and not isinstance(module, SHAPELESS):
            raise ConfigError(
                f"student.width: trunk block {index} has a layer {name!r} "
                f"({type(module).__name__}) whose weights cannot be rescaled; use width 1.0"
            )


def _conv(conv, width, scale_in):
    c_in = scaled(conv.in_channels, width) if scale_in else conv.in_channels
    c_out = scaled(conv.out_channels, width)
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    groups = c_in if depthwise else conv.groups
    return nn.Conv2d(
        c_in,
        c_out,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups,
        conv.bias is not None,
        conv.padding_mode,
    )


def scale_width(blocks, width):
    """``blocks`` (converted trunk blocks, in order) with every channel count scaled."""
    if width == 1.0:
        return blocks
    for index, block in enumerate(blocks, start=1):
        _check(block, index)
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Conv2d):
                scale_in = not (index == 1 and module.in_channels <= 4)
                replace_module(block, name, _conv(module, width, scale_in))
            elif isinstance(module, nn.BatchNorm2d):
                replace_module(
                    block, name, nn.BatchNorm2d(scaled(module.num_features, width), module.eps, module.momentum)
                )
    return blocks
