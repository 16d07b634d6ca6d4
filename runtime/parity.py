"""Parity: do two runners of the same network give the same numbers?

Kept apart, as in Polygraphy: a *runner* is any callable ``feeds -> {output name:
array}`` (:func:`onnx_runner` here, ``runtime.torch_runner.torch_runner`` for a
PyTorch module), and :func:`compare` judges two output dicts with no knowledge of
who produced them. The paper's last step (the TargetNet "checked against the
PyTorch student and against the teachers before deployment") is :func:`compare`
on numbers here and task agreement in ``toolkit.eval.metrics``.

Per output, with ``ref`` the reference and ``cand`` the candidate:

* absolute error ``|cand - ref|``, relative error ``|cand - ref| / (|ref| + EPS)``
  with ``EPS = 1e-8`` (keeps zeros in the reference finite; a statistic only);
* max / mean / p99 of both (p99: the element at the 99th percentile, no
  interpolation, so an infinite error stays infinite rather than NaN);
* pass when every element satisfies ``|cand - ref| <= atol + rtol * |ref| + srtol * max|ref|``:
  the ``numpy.allclose`` rule, with a per-output ``atol`` from ``tolerances``, plus a
  term relative to the output's own scale (its largest finite magnitude, ``max|ref|``);
* the signal-to-quantization-noise ratio ``SQNR = 10 log10(sum ref^2 / sum (cand - ref)^2)``
  in dB (as ``torch.ao.ns``'s numeric suite defines it): with ``min_sqnr_db`` an output passes
  when its SQNR reaches it, instead of the element-wise rule. That is the int8 rule: an int8
  network's error grows with the output's scale and has a heavy tail of single elements
  (an activation rounded across a ReLU's edge), so no element-wise bound both holds on every
  student and catches a wrong conversion; the error's energy against the output's does
  (toolkit.ship.int8, docs/edge.md: int8 students 25 to 40 dB, outputs swapped between
  tasks -1 to 10 dB).

The scale term is for float32 accumulation at a huge output scale. A network whose
activations grow layer after layer (torchvision's Inception-v3 at random weights:
logits of order 1e9 at 96x96) sums terms of order 1e9 into logits of any size, so a
logit near 0 carries float32 rounding of order 1e-7 of the terms (eps x depth), far above
``rtol * |ref|`` of its own small value: there the module's float32 differs from its float64
as much as ONNX Runtime differs from either (measured: 2.1e3 and 2.9e3 on logits of 1.1e9).
Relative to the output's scale that noise was 1.5e-6 to 3.5e-6 (3 weight seeds x batch 1,
2, 5); ``SRTOL = 1e-5`` passes it with a 3x margin, and on ResNet-50's logits (up to 18) it
adds 1.8e-4 to the atol: a wrong conversion there still fails (one BatchNorm epsilon
changed needs an atol of 6.4e-4 to pass; docs/design.md, tests/test_parity_defaults.py).

NaN against NaN and equal infinities count as equal; NaN against a number counts
as an infinite error.

>>> import numpy as np
>>> r = compare({"y": np.ones(4)}, {"y": np.ones(4) + 1e-6})
>>> r.passed, r.outputs["y"].max_abs < 2e-6
(True, True)
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from amalgam.runtime.errors import BadInputError, ModelFileError, ParityError, first_line
from amalgam.runtime.session import make_session

EPS = 1e-8
ATOL, RTOL = 1e-4, 1e-3  # the default tolerance of every parity check (docs/design.md: how they were chosen)
SRTOL = 1e-5  # the default tolerance relative to an output's scale, max|ref| (above)
KINDS = ("binary", "multiclass")


class ShapeError(ParityError):
    """An output is missing from the candidate, or its shape differs from the reference."""


class ToleranceError(ParityError):
    """Some outputs differ beyond ``atol + rtol * |ref| + srtol * max|ref|``."""


@dataclass
class OutputParity:
    """Error statistics of one output."""

    name: str
    shape: tuple
    atol: float
    rtol: float
    srtol: float
    scale: float  # max|ref|, finite values only
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    mismatched: float  # fraction of elements outside the tolerance
    worst_index: tuple  # where the largest absolute error is
    sqnr_db: float  # 10 log10(sum ref^2 / sum err^2); inf when equal
    passed: bool
    min_sqnr_db: float | None = None  # the SQNR rule replaces the element-wise one when set

    def describe(self):
        """One clause for a message: the output, its error statistics and its tolerance."""
        stats = (
            f"{self.name!r}: max abs error {self.max_abs:.3g} at {list(self.worst_index)} "
            f"(mean {self.mean_abs:.3g}, p99 {self.p99_abs:.3g}, max rel {self.max_rel:.3g}; "
        )
        if self.min_sqnr_db is not None:
            return stats + f"SQNR {self.sqnr_db:.1f} dB, below {self.min_sqnr_db:g} dB)"
        return stats + (
            f"{self.mismatched:.2%} of elements outside atol {self.atol:g} + rtol {self.rtol:g} * |ref| "
            f"+ srtol {self.srtol:g} * max|ref| {self.scale:.3g})"
        )


@dataclass
class ParityReport:
    """Per-output statistics of a comparison; ``passed`` when every output passed."""

    title: str
    outputs: dict = field(default_factory=dict)

    @property
    def passed(self):
        return all(o.passed for o in self.outputs.values())

    @property
    def failed(self):
        return [o for o in self.outputs.values() if not o.passed]

    def summary(self):
        """Worst max and p99 absolute error and lowest SQNR over all outputs, and the verdict."""
        outs = self.outputs.values()
        return {
            "max_abs": max((o.max_abs for o in outs), default=0.0),
            "p99_abs": max((o.p99_abs for o in outs), default=0.0),
            "sqnr_db": min((o.sqnr_db for o in outs), default=float("inf")),
            "passed": self.passed,
        }

    def to_dict(self):
        """JSON-able: ``{"title", "max_abs", "p99_abs", "passed", "outputs": {name: stats}}``."""
        outputs = {}
        for name, o in self.outputs.items():
            d = asdict(o)
            d["shape"], d["worst_index"] = list(o.shape), list(o.worst_index)
            outputs[name] = {k: _json_float(v) for k, v in d.items()}
        return {"title": self.title, **{k: _json_float(v) for k, v in self.summary().items()}, "outputs": outputs}

    def to_markdown(self):
        """A Markdown table, one row per output."""
        lines = [
            f"### {self.title}: {'pass' if self.passed else 'FAIL'}",
            "",
            "| output | shape | max abs | mean abs | p99 abs | max rel | p99 rel | SQNR dB | atol | rtol | outside | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for o in self.outputs.values():
            lines.append(
                f"| {o.name} | {'x'.join(map(str, o.shape))} | {o.max_abs:.3g} | {o.mean_abs:.3g} | "
                f"{o.p99_abs:.3g} | {o.max_rel:.3g} | {o.p99_rel:.3g} | {o.sqnr_db:.1f} | {o.atol:g} | {o.rtol:g} | "
                f"{o.mismatched:.2%} | {'pass' if o.passed else 'FAIL'} |"
            )
        return "\n".join(lines) + "\n"

    def raise_if_failed(self):
        """Raise :class:`ToleranceError` naming each failing output and its max abs error."""
        if self.passed:
            return self
        parts = [o.describe() for o in self.failed]
        raise ToleranceError(f"{self.title}: {len(parts)} of {len(self.outputs)} outputs differ; " + "; ".join(parts))


def _json_float(v):
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v


def _abs_error(ref, cand):
    """``|cand - ref|`` in float64; equal values (and NaN vs NaN) 0, NaN vs number inf."""
    ref, cand = ref.astype(np.float64), cand.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(cand - ref)
    err[(ref == cand) | (np.isnan(ref) & np.isnan(cand))] = 0.0
    err[np.isnan(err)] = np.inf
    return err


def _stats(kind, values):
    """``max_<kind>``, ``mean_<kind>``, ``p99_<kind>`` of ``values`` (zeros when empty)."""
    if values.size == 0:
        return {f"max_{kind}": 0.0, f"mean_{kind}": 0.0, f"p99_{kind}": 0.0}
    return {
        f"max_{kind}": float(values.max()),
        f"mean_{kind}": float(values.mean()),
        f"p99_{kind}": float(np.percentile(values, 99, method="higher")),
    }


def sqnr_db(ref, err):
    """``10 log10(sum ref^2 / sum err^2)`` in float64: inf when ``err`` is all zeros, -inf when it
    is infinite somewhere or ``ref`` is all zeros and ``err`` is not.

    >>> round(sqnr_db(np.full(4, 10.0), np.full(4, 1.0)), 6)
    20.0
    """
    noise = float(np.sum(np.square(err)))
    if noise == 0.0:
        return float("inf")
    signal = float(np.sum(np.square(np.nan_to_num(ref.astype(np.float64), posinf=0.0, neginf=0.0))))
    if not np.isfinite(noise) or signal == 0.0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def compare_output(name, ref, cand, atol, rtol, srtol=SRTOL, min_sqnr_db=None):
    """:class:`OutputParity` of one output; :class:`ShapeError` when shapes differ."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape != cand.shape:
        raise ShapeError(f"output {name!r}: reference has shape {list(ref.shape)}, candidate {list(cand.shape)}")
    err = _abs_error(ref, cand)
    mag = np.abs(ref.astype(np.float64))
    mag[~np.isfinite(mag)] = 0.0  # a non-finite reference allows no slack
    rel = err / (mag + EPS)
    empty = err.size == 0
    scale = 0.0 if empty else float(mag.max())
    outside = ~(err <= atol + rtol * mag + srtol * scale)
    sqnr = sqnr_db(ref, err)
    return OutputParity(
        name=name,
        shape=tuple(ref.shape),
        atol=float(atol),
        rtol=float(rtol),
        srtol=float(srtol),
        scale=scale,
        **_stats("abs", err),
        **_stats("rel", rel),
        mismatched=0.0 if empty else float(outside.mean()),
        worst_index=() if empty else tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape)),
        sqnr_db=sqnr,
        passed=not outside.any() if min_sqnr_db is None else sqnr >= min_sqnr_db,
        min_sqnr_db=min_sqnr_db,
    )


def compare(
    reference,
    candidate,
    atol=ATOL,
    rtol=RTOL,
    tolerances=None,
    title="candidate vs reference",
    srtol=SRTOL,
    min_sqnr_db=None,
):
    """Compare every output of ``reference`` with the same-named output of ``candidate``.

    ``tolerances`` maps an output name to its own ``atol`` (``--tolerance OUTPUT:ATOL``);
    ``min_sqnr_db`` judges every output by its SQNR instead (the int8 rule, above);
    a name that is not an output of the reference is bad input. A missing candidate
    output or a shape mismatch raises :class:`ShapeError`; values beyond tolerance
    give a failing report (call :meth:`ParityReport.raise_if_failed`).
    """
    tolerances = dict(tolerances or {})
    unknown = sorted(set(tolerances) - set(reference))
    if unknown:
        raise BadInputError(f"tolerance given for {unknown}, but the outputs are {sorted(reference)}")
    report = ParityReport(title)
    for name, ref in reference.items():
        if name not in candidate:
            raise ShapeError(f"output {name!r}: the candidate has no such output (it has {sorted(candidate)})")
        report.outputs[name] = compare_output(
            name, ref, candidate[name], tolerances.get(name, atol), rtol, srtol, min_sqnr_db
        )
    return report


def as_feeds(input_names, batch):
    """``batch`` as a feed dict: a dict is checked against ``input_names``; an array
    is accepted for a single-input model."""
    if not isinstance(batch, dict):
        if len(input_names) != 1:
            raise BadInputError(f"the model has inputs {list(input_names)}: feed a dict, not one array")
        batch = {input_names[0]: batch}
    missing = [n for n in input_names if n not in batch]
    if missing:
        raise BadInputError(f"feeds lack input(s) {missing}; the model's inputs are {list(input_names)}")
    return {n: np.asarray(batch[n]) for n in input_names}


def onnx_runner(path_or_model, opt_level="basic", device="cpu", threads=None, label=None):
    """A runner over an ONNX model: ``feeds -> {output name: array}`` (every output).

    Validation uses ``basic`` optimisation, so fused kernels do not hide a difference.
    A model that ONNX Runtime cannot run on the feeds (a batch fixed in a Reshape,
    a wrong dtype) raises :class:`~amalgam.runtime.errors.ModelFileError` naming ``label`` and the shapes fed.
    """
    session = make_session(path_or_model, device=device, threads=threads, opt_level=opt_level)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    label = label or (
        str(path_or_model) if isinstance(path_or_model, (str, bytes)) or hasattr(path_or_model, "stem") else "the model"
    )

    def run(batch):
        feeds = as_feeds(inputs, batch)
        try:
            return dict(zip(outputs, session.run(outputs, feeds)))
        except Exception as e:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise ModelFileError(f"{label}: ONNX Runtime cannot run it on {shapes}: {first_line(e)}") from e

    run.input_names, run.output_names = inputs, outputs
    return run


def collect(runner, batches):
    """Run ``runner`` over ``batches`` and concatenate each output along the batch axis."""
    parts = {}
    for batch in batches:
        for name, value in runner(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}
