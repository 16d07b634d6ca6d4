"""int8 that pays, per runtime: every variant a runtime offers is measured on held-out
training rows (no labels, never the test split), and the fastest that stays within the
int8 gate of ``amalgam validate`` there is kept (its decisions within :data:`AGREEMENT`
of the PyTorch student's, its outputs within :data:`PARITY`), so that no variant ships
which its own gate would fail; it pays when it beats that runtime's fp32 artifact at
batch 64.

A variant is ``(name, build)``: ``build(path)`` writes the int8 file there. The
choice is recorded per target in targets.json (``int8``): each variant's batch-64
latency and its worst task's decision agreement, the chosen one, the fp32 latency
beside it, ``pays`` and, where it does not, why in numbers.
"""

from dataclasses import dataclass

import numpy as np

from amalgam.runtime.errors import ExportError
from amalgam.runtime.parity import compare
from amalgam.toolkit.eval.metrics import agreement
from amalgam.toolkit.ship.latency import runner_latency_ms

AGREEMENT = 0.99  # worst task's decision agreement with the PyTorch student on held-out rows (1% flips)
# An int8 artifact's outputs against the PyTorch student's: each output's SQNR (runtime.parity).
# Measured on both samples' students over 10,000 test images (docs/edge.md): int8 25.0-40.3 dB
# on every runtime; a conversion that hands a task another task's logits -0.8-9.5 dB.
PARITY = {"min_sqnr_db": 20.0}
BATCH = 64


@dataclass
class Candidate:
    name: str
    path: object
    b64_ms: float | None = None
    agreement: float | None = None
    parity: bool | None = None
    sqnr_db: float | None = None  # the lowest over the outputs
    error: str | None = None

    @property
    def within(self):
        return self.error is None and self.agreement >= AGREEMENT and self.parity

    def record(self):
        return {
            "name": self.name,
            "b64_ms": self.b64_ms,
            "agreement": self.agreement,
            "parity": self.parity,
            "sqnr_db": self.sqnr_db,
            "error": self.error,
        }


def worst_agreement(kinds, reference, outputs):
    """The lowest per-task decision agreement of ``outputs`` with ``reference``."""
    return min(agreement(kind, outputs[name], reference[name]) for name, kind in kinds.items())


def measure(candidate, open_runner, rows, reference, kinds, sample_shape):
    """Latency at batch 64, worst-task agreement and parity of one built variant (in place)."""
    runner = open_runner(candidate.path)
    parts = {}
    for start in range(0, len(rows), BATCH):
        for name, value in runner(rows[start : start + BATCH]).items():
            parts.setdefault(name, []).append(value)
    outputs = {k: np.concatenate(v) for k, v in parts.items()}
    candidate.agreement = worst_agreement(kinds, reference, outputs)
    report = compare({k: reference[k] for k in kinds}, outputs, **PARITY)
    candidate.parity, candidate.sqnr_db = report.passed, report.summary()["sqnr_db"]
    candidate.b64_ms = runner_latency_ms(runner, sample_shape, BATCH)
    return candidate


def choose(variants, open_runner, rows, reference, kinds, sample_shape, fp32_b64_ms):
    """Build and measure every variant; ``(chosen Candidate or None, the int8 record)``."""
    candidates = []
    for name, build in variants:
        candidate = Candidate(name, None)
        try:
            candidate.path = build()
            measure(candidate, open_runner, rows, reference, kinds, sample_shape)
        except ExportError as e:
            candidate.error = str(e)
        candidates.append(candidate)
    within = [c for c in candidates if c.within]
    chosen = min(within, key=lambda c: c.b64_ms, default=None)
    record = {
        "bound": {
            "worst_task_agreement": AGREEMENT,
            **PARITY,
            "rows": len(rows),
            "data": "held-out training rows",
        },
        "variants": [c.record() for c in candidates],
        "chosen": chosen and chosen.name,
        "fp32_b64_ms": fp32_b64_ms,
        "pays": bool(chosen and chosen.b64_ms < fp32_b64_ms),
    }
    record["why"] = _why(chosen, candidates, fp32_b64_ms)
    return chosen, record


def _why(chosen, candidates, fp32_b64_ms):
    if chosen is None and all(c.error for c in candidates):
        return "no variant ran: " + "; ".join(f"{c.name}: {c.error}" for c in candidates)
    if chosen is None:
        best = max((c.agreement for c in candidates if c.agreement is not None), default=None)
        parity = [c.name for c in candidates if c.parity]
        return (
            f"no variant within the bound (best worst-task agreement {best}; "
            f"SQNR >= {PARITY['min_sqnr_db']:g} dB: {', '.join(parity) or 'none'})"
        )
    ratio = chosen.b64_ms / fp32_b64_ms
    verdict = "faster" if ratio < 1 else "not faster"
    return (
        f"{chosen.name}: {chosen.b64_ms:.3g} ms at batch 64 vs fp32 {fp32_b64_ms:.3g} ms "
        f"({ratio:.2f}x, {verdict}), worst-task agreement {chosen.agreement:.4f}"
    )
