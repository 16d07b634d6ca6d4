"""What a teacher's ONNX file offers for amalgamation: its inputs, outputs, opset,
producer and candidate block boundaries (where its graph can be cut into the paper's
blocks); with ``check``, the branch after each boundary cut, converted to torch and
compared with ONNX Runtime on random inputs by the one comparator
(:func:`~amalgam.runtime.parity.compare`, ``atol + rtol * |ref| + srtol * max|ref|``).

A branch outside that tolerance is run once more in float64: float32 rounding that a
network amplifies (keras.applications ResNet50 at random weights: 1.8e-4 on logits of
scale 3.8) leaves ONNX Runtime as far from the float64 result as the converted branch's
own float32 is, while a wrong conversion leaves ONNX Runtime far from it. The branch
then passes when ONNX Runtime's outputs are within ``atol`` plus ``NOISE`` times the
branch's own float32 error of its float64 run (the report's title says so), and fails
otherwise (tests/test_inspect_float64.py: a convolution's weights 0.1% off, what a BatchNorm
epsilon of 1e-3 for 1e-5 does to a folded convolution, still fails)."""

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from amalgam.runtime.blocks import find_boundaries
from amalgam.runtime.errors import BadInputError, ParityError
from amalgam.runtime.graph import data_inputs, dims
from amalgam.runtime.model_io import default_opset, load_model
from amalgam.runtime.normalize import example_shape, normalize
from amalgam.runtime.parity import ATOL, RTOL, SRTOL, compare

CHECK_BATCH = 2
NOISE = 4.0  # how many times its own float32 error ONNX Runtime may be from a branch's float64 run


@dataclass
class Inspection:
    """``amalgam inspect``'s findings; ``blocks`` rows gain ``branch_max_abs_diff``,
    ``branch_p99_abs_diff`` and ``branch_ok`` when the branches were checked."""

    path: str
    inputs: list
    outputs: list
    opset: int
    producer: str
    blocks: list = field(default_factory=list)
    graph: onnx.ModelProto | None = field(default=None, repr=False)  # normalised
    boundaries: list = field(default_factory=list, repr=False)  # runtime.blocks.Boundary
    parity: dict = field(default_factory=dict, repr=False)  # boundary -> ParityReport

    @property
    def failed(self):
        """The parity reports of the branches that differ from ONNX Runtime."""
        return [r for r in self.parity.values() if not r.passed]

    def to_dict(self):
        """The JSON of ``amalgam inspect --json``."""
        return {k: v for k, v in asdict(self).items() if k in ("inputs", "outputs", "opset", "producer", "blocks")}

    def failure(self):
        """One line naming every branch that differs and each failing output, or None."""
        if not self.failed:
            return None
        return f"{self.path}: {len(self.failed)} of {len(self.blocks)} branches differ from ONNX Runtime: " + "; ".join(
            f"{r.title}: " + ", ".join(o.describe() for o in r.failed) for r in self.failed
        )

    def raise_if_failed(self):
        if self.failed:
            raise ParityError(self.failure())
        return self


def value_info(vi):
    t = vi.type.tensor_type
    shape = dims(vi, symbolic=True) or []
    return {"name": vi.name, "shape": shape, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name}


def _random_feeds(model):
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        if vi.name not in data_inputs(model):
            continue
        value = value_info(vi)
        shape = value["shape"]
        if any(not isinstance(d, int) for d in shape[1:]):
            example = example_shape(vi.name, [d if isinstance(d, int) else None for d in shape])
            raise BadInputError(
                f"input {vi.name!r} has open dims {shape}: give them, e.g. {example} (with your own sizes)"
            )
        shape = [d if isinstance(d, int) else CHECK_BATCH for d in shape]
        feeds[vi.name] = rng.standard_normal(shape).astype(value["dtype"])
    return feeds


def check_branches(model, boundaries, label="the model", atol=ATOL, rtol=RTOL):
    """``{boundary: ParityReport}``: each branch as torch vs the whole graph under ONNX Runtime."""
    from amalgam.runtime.convert import to_torch
    from amalgam.runtime.cut import cut_branch
    from amalgam.runtime.parity import onnx_runner
    from amalgam.runtime.taps import add_taps

    names = [b.name for b in boundaries]
    outputs = [o.name for o in model.graph.output]
    values = onnx_runner(add_taps(model, names), label=label)(_random_feeds(model))
    return {
        name: judge_branch(
            to_torch(cut_branch(model, name, outputs)),
            values[name],
            {o: values[o] for o in outputs},
            f"branch after {name!r}",
            atol,
            rtol,
        )
        for name in names
    }


def judge_branch(branch, feed, reference, title, atol=ATOL, rtol=RTOL, srtol=SRTOL):
    """The ParityReport of a converted ``branch`` (a torch module) fed ``feed`` against ONNX
    Runtime's ``reference`` outputs; outside the tolerance, judged against its float64 run
    instead (the module doc). A branch that cannot run in float64 keeps its float32 verdict."""
    import torch

    got = _outputs(branch, torch.from_numpy(feed), reference)
    report = compare(reference, got, atol, rtol, None, title, srtol)
    if report.passed:
        return report
    try:
        exact = _outputs(copy.deepcopy(branch).double(), torch.from_numpy(feed).double(), reference)
    except (RuntimeError, TypeError):
        return report
    noise = {o: atol + NOISE * float(np.abs(exact[o] - out).max(initial=0.0)) for o, out in got.items()}
    return compare(exact, reference, atol, rtol, noise, f"{title}, ONNX Runtime against its float64 run", srtol)


def _outputs(branch, x, reference):
    """``{output name: array}`` of ``branch(x)``, named in ``reference``'s order."""
    import torch

    with torch.no_grad():
        got = branch(x)
    got = got if isinstance(got, (tuple, list)) else [got]
    return {o: g.numpy() for o, g in zip(reference, got)}


def block_row(boundary):
    """A boundary as a row of ``blocks``: name, shape, layout and kind; a ``tokens`` one
    also its patch grid ``[h, w]``, stride and extra tokens (how many, and at which end)."""
    row = {"name": boundary.name, "shape": boundary.shape, "layout": boundary.layout, "kind": boundary.kind}
    if boundary.kind == "tokens":
        grid = list(boundary.grid) if boundary.grid else None
        row.update(grid=grid, stride=boundary.stride, extra_tokens=boundary.extra_tokens, extra_at=boundary.extra_at)
    return row


def inspect_model(path, input_shape=None, check=False, atol=ATOL, rtol=RTOL):
    """Inspect the ONNX file at ``path``; ``input_shape`` (``{input: dims}``) fixes open dims."""
    model = load_model(path)
    try:
        graph = normalize(model, input_shape or None)
    except BadInputError as e:
        raise type(e)(f"{path}: {e}") from e
    boundaries = find_boundaries(graph)
    found = Inspection(
        str(path),
        inputs=[value_info(vi) for vi in model.graph.input if vi.name in data_inputs(model)],
        outputs=[value_info(vi) for vi in model.graph.output],
        opset=default_opset(model),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        blocks=[block_row(b) for b in boundaries],
        graph=graph,
        boundaries=boundaries,
    )
    if check:
        found.parity = check_branches(graph, boundaries, str(path), atol, rtol)
        for block in found.blocks:
            result = found.parity[block["name"]]
            block["branch_max_abs_diff"] = result.summary()["max_abs"]
            block["branch_p99_abs_diff"] = result.summary()["p99_abs"]
            block["branch_ok"] = result.passed
    return found
