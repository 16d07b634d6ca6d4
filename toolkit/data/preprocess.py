"""A teacher's input preprocessing: from the sources' float (n, C, H, W) in [0, 1]
to what its ONNX graph expects (size, channels, mean/std, NCHW or NHWC)."""

import numpy as np

from amalgam.toolkit.data.pixels import conform
from amalgam.toolkit.data.source import digest


def input_shape(preprocess, batch=1):
    """The input a preprocessing feeds for ``batch`` images: ``(batch, C, H, W)``, or
    ``(batch, H, W, C)`` for NHWC. ``preprocess``: a config's `teachers[i].preprocess`
    or its dict (as a student's spec.json holds it).

    >>> input_shape({"size": [28, 28], "channels": 1})
    (1, 1, 28, 28)
    >>> input_shape({"size": [32, 32], "channels": 3, "layout": "NHWC"}, batch=4)
    (4, 32, 32, 3)
    """
    p = preprocess.model_dump() if hasattr(preprocess, "model_dump") else dict(preprocess)
    (h, w), c = p["size"], p["channels"]
    return (batch, h, w, c) if p.get("layout", "NCHW") == "NHWC" else (batch, c, h, w)


class Preprocess:
    """x -> (resize(channels(x)) - mean) / std, laid out NCHW or NHWC, float32.
    mean/std hold one value or one per channel (teachers fed 0..255 pixels use
    std = 1/255)."""

    def __init__(self, size, channels: int, mean=(0.0,), std=(1.0,), layout="NCHW", resize="bilinear"):
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout: expected 'NCHW' or 'NHWC', found {layout!r}")
        for key, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise ValueError(f"{key}: expected 1 or {channels} values, found {len(values)}")
        self.size, self.channels = tuple(size), channels
        self.layout, self.resize = layout, resize
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)

    @classmethod
    def from_config(cls, spec) -> "Preprocess":
        """From a config's `teachers[i].preprocess` (model or dict)."""
        spec = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
        return cls(**spec)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = conform(batch, self.size, self.channels, self.resize)
        x = (x - self.mean) / self.std
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def fingerprint(self) -> str:
        return digest(
            "preprocess",
            self.size,
            self.channels,
            self.mean.ravel().tolist(),
            self.std.ravel().tolist(),
            self.layout,
            self.resize,
        )
