"""Exact graph folds on the exported student, after onnxsim (torch-free).

Paper terms -> code: a TargetNet branch is gate (the filter) -> adapter -> the
teacher's own layers. Trained, the gate's per-channel multiply and the adapter's
1x1 conv are extra nodes that ONNX Runtime pays for on every call, mostly per
node at batch 1. Each fold here rewrites them away where the result is the same
function (up to float rounding), and the parity gate (``amalgam validate``:
``student.onnx`` vs ``student.raw.onnx``) checks every exported student.

* :func:`pool_first`: a global pool (ReduceMean / ReduceSum over the spatial
  axes) moves up past what commutes with it: a Transpose (axes renamed), a
  per-channel Mul (the gate: ``GAP(x * g) = GAP(x) * g``), a 1x1 Conv (the adapter
  becomes a Gemm on the pooled vector). A branch that pools first then gates a
  ``(N, C)`` vector instead of an ``(N, C, H, W)`` map, and its pool is the gate's own
  squeeze (merged by :func:`merge_duplicates`).
* :func:`fold_linear_conv`: a 1x1 Conv (the adapter, no nonlinearity after it)
  folds into the Conv that follows it. The adapter's bias through a zero-padded
  conv is not a per-channel constant at the borders; it is computed exactly (ONNX
  Runtime runs the following conv on the bias map) and added as a constant map.
* :func:`fold_gemm_chain`: Gemm(Gemm(x)) -> one Gemm; a constant per-column scale
  before a Gemm goes into its weights. Helpers feed it: :func:`divide_as_multiply`,
  :func:`sum_as_mean` (a pooled sum is a mean times a constant), :func:`sink_scalar`
  (the gate's x2 moves down to the Gemm), :func:`drop_reshape_round_trip`.
* :func:`merge_gemms` and :func:`sink_split`: Gemms reading one feature (the
  branches' gate squeezes) become one Gemm and a Split, and the Split moves down past
  what the parts all do alike (one Relu, block-diagonal Gemms, one Sigmoid, one Mul).
* :func:`merge_duplicates`: nodes with the same op, attributes and inputs run once.
* :func:`split_outputs` (last): task outputs gathered column by column from one Gemm
  come out of one transposed Gemm and one Split.

:func:`fold_student` applies them all until none applies and returns the counts.
Every rewrite is exact in real arithmetic; in float32 the results differ by rounding
(re-associated sums), well inside the parity gate's tolerance.
"""

from collections import Counter

from amalgam.exporters.fold.linear import fold_gemm_chain, fold_linear_conv, pool_first
from amalgam.exporters.fold.merge import (
    divide_as_multiply,
    drop_reshape_round_trip,
    merge_duplicates,
    merge_gemms,
    sink_scalar,
    sink_split,
    split_outputs,
    sum_as_mean,
)
from amalgam.exporters.fold.view import GraphView
from amalgam.runtime.graph import prune_dead

FOLDS = (
    ("pool_first", pool_first),
    ("linear_conv", fold_linear_conv),
    ("reshape_round_trip", drop_reshape_round_trip),
    ("divide", divide_as_multiply),
    ("sum_as_mean", sum_as_mean),
    ("scalar", sink_scalar),
    ("gemm_chain", fold_gemm_chain),
    ("duplicates", merge_duplicates),
    ("merge_gemms", merge_gemms),
    ("split", sink_split),
)


LAST = (("split_outputs", split_outputs),)  # once the others are done: it hides the heads' Gemms from them


def fold_student(model):
    """Apply every fold until none applies; returns (model, {fold: count}). ``model`` is changed in place."""
    view, counts = GraphView(model), Counter()
    changed = True
    while changed:
        changed = False
        for name, fold in FOLDS:
            n = fold(view)
            counts[name] += n
            changed = changed or n > 0
    for name, fold in LAST:
        counts[name] += fold(view)
    _drop_unused(model)
    return model, {name: counts[name] for name, _ in FOLDS + LAST}


def _drop_unused(model):
    prune_dead(model.graph)
    known = {n for node in model.graph.node for n in node.output} | {i.name for i in model.graph.input}
    keep = [vi for vi in model.graph.value_info if vi.name in known]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
