"""Two feature-level amalgamation baselines beside multi-teacher KD, in the same harness.

Each is trained like the KD baseline (toolkit.method.amalgamate ``train_baseline``):
the student's final architecture from the same fresh start, the same data, epochs,
held-out epoch choice and threshold rule, the same output losses (the teachers'
hard or soft targets, ``training.targets``). What differs is a feature loss on the
trunk's block outputs, weighted by ``baseline.feature_weight``, computed by a
training-only module (:class:`FeatureLoss`) that trains beside the net through
``train_end_to_end`` (``aux``) and is never part of the saved net.

* ``layerwise_ka`` (:class:`LayerwiseKA`; Shen et al., AAAI 2019, "Amalgamating
  Knowledge towards Comprehensive Classification"): at every trunk block boundary
  the teachers' features there (the cached taps, NCHW, resized to the student's
  spatial size) are concatenated and compressed by a 1x1-conv auto-encoder (encoder
  to the student block's channels, decoder back; reconstruction MSE), and the
  student's block output regresses the code (MSE). The paper trains the
  auto-encoders first and then the student, stage by stage; here everything trains
  jointly, end to end, for the KD baseline's epochs, and the paper's first stage is
  replaced by a closed-form start: each auto-encoder starts at the optimum of a
  linear auto-encoder, the principal components of the teachers' features on a
  sample of training rows (Baldi & Hornik 1989; :func:`fit_autoencoder`), as the
  branch adapters start at their least-squares fit. The code is a target: the
  regression's gradient stops at it, so the auto-encoder learns from
  reconstruction alone and cannot make the regression easy by moving its code
  (from a random start, its code drifts while the student chases it: the
  regression term then rises over a run).
* ``cfl`` (:class:`CommonFeatures`; Luo et al., IJCAI 2019, "Knowledge Amalgamation
  from Heterogeneous Networks by Common Feature Learning"): at the final trunk
  boundary each teacher's feature and the student's are mapped by per-network
  1x1-conv encoders into one common space of the student's width; losses: the
  student's common feature against each teacher's, each teacher's feature
  reconstructed from its common feature by a 1x1-conv decoder, plus the output KD.
  We use the paired L2 (MSE) in the common space, not the paper's MMD: every
  network sees the same images, so the features pair pixel by pixel and L2 matches
  them point for point, where MMD matches only their distributions, at a kernel
  cost quadratic in the batch's pixels. L2 alone would reward shrinking every code
  toward zero, so each teacher's common feature is standardised per channel over
  the batch (zero mean, unit variance; no running statistics).

Both need every training row's taps: with either on, the target cache keeps them
(:func:`needs_every_tap`).
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from amalgam.runtime.errors import ConfigError
from amalgam.runtime.tokens import tokens_to_map
from amalgam.toolkit.student.adapters import resize_to
from amalgam.toolkit.student.infer import to_tensor
from amalgam.toolkit.student.parts import feature_shape

FEATURE_BASELINES = ("layerwise_ka", "cfl")
BASELINES = ("kd", *FEATURE_BASELINES)  # the run dir's folder and metrics.json's key of each
EPS = 1e-5
PCA_ROWS = 256  # training rows whose features start the auto-encoders


def enabled_baselines(config):
    """The baselines ``config.baseline`` switches on, in :data:`BASELINES` order."""
    return [name for name in BASELINES if getattr(config.baseline, name)]


def needs_every_tap(config):
    """True when the run reads every training row's teacher features: the feature hint,
    or a feature baseline."""
    return bool(config.training.hint_weight) or any(getattr(config.baseline, n) for n in FEATURE_BASELINES)


def feature_teachers(teachers):
    """The teachers whose features a feature baseline amalgamates: those with chosen tasks and blocks."""
    return [t for t in teachers if t.tasks and t.structured]


def check_feature_baselines(config, teachers):
    """A feature baseline needs at least one teacher with block features: else a ConfigError."""
    for name in FEATURE_BASELINES:
        if getattr(config.baseline, name) and not feature_teachers(teachers):
            raise ConfigError(
                f"baseline.{name}: no teacher of the chosen tasks has block boundaries, so there "
                f"are no features to amalgamate; set it to false or choose a CNN teacher's tasks"
            )


def teacher_feature(data, teacher, block, idx, size, device):
    """``teacher``'s cached tap at ``block`` for rows ``idx``: NCHW (a ViT's patch tokens as
    their grid's map), at the student's spatial ``size``."""
    tap = to_tensor(data.taps[(teacher.name, block)], idx, device)
    boundary = teacher.boundary(block)
    if boundary.kind == "tokens":
        tap = tokens_to_map(tap, boundary)
    elif boundary.layout == "NHWC":
        tap = tap.permute(0, 3, 1, 2)
    return resize_to(tap, size)


def standardise(h):
    """Each channel of an NCHW batch at zero mean and unit variance over (N, H, W)."""
    h = h - h.mean(dim=(0, 2, 3), keepdim=True)
    return h / (h.pow(2).mean(dim=(0, 2, 3), keepdim=True) + EPS).sqrt()


class FeatureLoss(nn.Module):
    """A feature baseline's training-only modules and loss. ``forward(idx, features)``:
    ``weight`` x the sum of :meth:`terms` on the trunk's block outputs ``features`` for rows
    ``idx``; each term's mean over the epoch's batches is read (and reset) by :meth:`epoch_means`."""

    def __init__(self, data, teachers, weight):
        super().__init__()
        self.data, self.teachers, self.weight = data, feature_teachers(teachers), weight
        self.sums, self.batches = {}, 0

    def feature(self, teacher, block, idx, like):
        return teacher_feature(self.data, teacher, block, idx, like.shape[-2:], like.device)

    def forward(self, idx, features):
        terms = self.terms(idx, features)
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.batches += 1
        return self.weight * sum(terms.values())

    def epoch_means(self):
        means = {key: value / max(self.batches, 1) for key, value in self.sums.items()}
        self.sums, self.batches = {}, 0
        return means


class LayerwiseKA(FeatureLoss):
    """Layer-wise feature amalgamation (Shen et al. 2019): per block boundary, an auto-encoder
    of the teachers' concatenated features whose code the student's block output regresses."""

    def __init__(self, data, teachers, weight, student_shapes, sample):
        super().__init__(data, teachers, weight)
        wide = [
            sum(feature_shape(t.boundary(block))[0] for t in self.teachers)
            for block in range(1, len(student_shapes) + 1)
        ]
        self.encoders = nn.ModuleList(nn.Conv2d(w, shape[0], 1) for w, shape in zip(wide, student_shapes))
        self.decoders = nn.ModuleList(nn.Conv2d(shape[0], w, 1) for w, shape in zip(wide, student_shapes))
        for block, shape in enumerate(student_shapes, start=1):
            f = self.concatenated(block, sample, torch.empty(0, *shape))
            fit_autoencoder(self.encoders[block - 1], self.decoders[block - 1], f)

    def concatenated(self, block, idx, like):
        """The teachers' features at ``block`` side by side, at ``like``'s spatial size."""
        return torch.cat([self.feature(t, block, idx, like) for t in self.teachers], dim=1)

    def terms(self, idx, features):
        regress, reconstruct = 0.0, 0.0
        for block, h in enumerate(features, start=1):
            f = self.concatenated(block, idx, h)
            code = self.encoders[block - 1](f)
            reconstruct = reconstruct + F.mse_loss(self.decoders[block - 1](code), f)
            regress = regress + F.mse_loss(h, code.detach())
        return {"regress": regress / len(features), "reconstruct": reconstruct / len(features)}


class CommonFeatures(FeatureLoss):
    """Common feature learning (Luo et al. 2019) at the final trunk boundary: per-network
    encoders into one standardised space of the student's width, per-teacher decoders back."""

    def __init__(self, data, teachers, weight, student_shapes):
        super().__init__(data, teachers, weight)
        self.block = len(student_shapes)
        width = student_shapes[-1][0]
        self.student_encoder = nn.Conv2d(width, width, 1)
        channels = {t.name: feature_shape(t.boundary(self.block))[0] for t in self.teachers}
        self.encoders = nn.ModuleDict({name: nn.Conv2d(c, width, 1) for name, c in channels.items()})
        self.decoders = nn.ModuleDict({name: nn.Conv2d(width, c, 1) for name, c in channels.items()})

    def terms(self, idx, features):
        h = features[self.block - 1]
        student = self.student_encoder(h)
        common, reconstruct = 0.0, 0.0
        for t in self.teachers:
            f = self.feature(t, self.block, idx, h)
            code = standardise(self.encoders[t.name](f))
            common = common + F.mse_loss(student, code)
            reconstruct = reconstruct + F.mse_loss(self.decoders[t.name](code), f)
        return {"common": common / len(self.teachers), "reconstruct": reconstruct / len(self.teachers)}


@torch.no_grad()
def fit_autoencoder(encoder, decoder, features):
    """Set a 1x1-conv auto-encoder to the linear one of least reconstruction error on ``features``
    (N, C, H, W; pixels are the samples): the encoder projects the centred feature onto its top
    principal components (as many as the code has channels; any further code channel is zero),
    the decoder maps back and adds the mean."""
    x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    mean = x.mean(dim=0)
    _, vectors = torch.linalg.eigh((x - mean).T @ (x - mean) / len(x))  # ascending eigenvalues
    k = min(encoder.out_channels, vectors.shape[1])
    w = torch.zeros(encoder.out_channels, x.shape[1], dtype=x.dtype)
    w[:k] = vectors[:, -k:].flip(1).T
    encoder.weight.copy_(w[:, :, None, None].to(encoder.weight.dtype))
    encoder.bias.copy_((-w @ mean).to(encoder.bias.dtype))
    decoder.weight.copy_(w.T[:, :, None, None].to(decoder.weight.dtype))
    decoder.bias.copy_(mean.to(decoder.bias.dtype))


@torch.no_grad()
def block_shapes(net, inputs, device):
    """(C, H, W) of each trunk block's output of ``net`` (one input row, eval mode)."""
    features = []
    net.eval().forward_dict(to_tensor(inputs, np.arange(1), device), features)
    return [tuple(h.shape[1:]) for h in features]


def feature_loss(name, net, data, indices, teachers, weight, device):
    """The training-only :class:`FeatureLoss` of baseline ``name`` for ``net``, on ``device``
    (None for ``kd``: output losses alone); ``indices``: the training rows (the first
    :data:`PCA_ROWS` start the auto-encoders of ``layerwise_ka``)."""
    if name not in FEATURE_BASELINES:
        return None
    shapes = block_shapes(net, data.inputs, device)
    if name == "layerwise_ka":
        return LayerwiseKA(data, teachers, weight, shapes, np.sort(np.asarray(indices)[:PCA_ROWS])).to(device)
    return CommonFeatures(data, teachers, weight, shapes).to(device)
