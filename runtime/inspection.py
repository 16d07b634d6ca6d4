"""What a teacher's ONNX file offers for amalgamation: its inputs, outputs, opset,
producer and candidate block boundaries (where its graph can be cut into the paper's
blocks); with ``check``, the branch after each boundary cut, converted to torch and
compared with ONNX Runtime on random inputs."""

from dataclasses import asdict, dataclass, field

import numpy as np
from onnx import helper

from runtime.align import image_size_or_none
from runtime.blocks import find_boundaries
from runtime.errors import BadInputError, ParityError
from runtime.graph import data_inputs, dims
from runtime.model_io import default_opset, load_model
from runtime.normalize import normalize

CHECK_BATCH = 2


@dataclass
class Inspection:
    """``amalgam inspect``'s findings; ``blocks`` rows gain ``branch_max_abs_diff`` and
    ``branch_ok`` when the branches were checked."""

    path: str
    inputs: list
    outputs: list
    opset: int
    producer: str
    blocks: list = field(default_factory=list)
    tol: float | None = None
    boundaries: list = field(default_factory=list)  # runtime.blocks.Boundary of each row of ``blocks``
    image: tuple | None = None  # (H, W) of the image input, for strides (runtime.align); None if none

    @property
    def failed(self):
        """Boundaries whose branch differs from ONNX Runtime by more than ``tol``."""
        return [b["name"] for b in self.blocks if b.get("branch_ok") is False]

    def to_dict(self):
        """The JSON of ``amalgam inspect --json``."""
        return {k: v for k, v in asdict(self).items() if k not in ("path", "tol", "boundaries", "image")}

    def raise_if_failed(self):
        if self.failed:
            raise ParityError(f"{self.path}: the branches after {', '.join(self.failed)} differ from "
                              f"ONNX Runtime by more than {self.tol}")
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
        dims = value["shape"]
        if any(not isinstance(d, int) for d in dims[1:]):
            example = ",".join(str(d) if isinstance(d, int) else "N" for d in [1] + dims[1:])
            raise BadInputError(f"input {vi.name!r} has open dims {dims}: give them, e.g. --input-shape {vi.name}:{example}")
        dims = [d if isinstance(d, int) else CHECK_BATCH for d in dims]
        feeds[vi.name] = rng.standard_normal(dims).astype(value["dtype"])
    return feeds


def check_branches(model, boundaries):
    """``{boundary: max abs diff}`` of each branch as torch vs the whole graph under ONNX Runtime."""
    import torch

    from runtime.convert import to_torch
    from runtime.cut import cut_branch
    from runtime.session import make_session
    from runtime.taps import add_taps

    names = [b.name for b in boundaries]
    outputs = [o.name for o in model.graph.output]
    session = make_session(add_taps(model, names), opt_level="basic")
    values = dict(zip(outputs + names, session.run(outputs + names, _random_feeds(model))))
    diffs = {}
    for name in names:
        branch = to_torch(cut_branch(model, name, outputs))
        with torch.no_grad():
            got = branch(torch.from_numpy(values[name]))
        got = got if isinstance(got, (tuple, list)) else [got]
        diffs[name] = max(float(np.abs(g.numpy() - values[o]).max()) for g, o in zip(got, outputs))
    return diffs


def inspect_model(path, input_shape=None, check=False, tol=1e-4):
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
        blocks=[{"name": b.name, "shape": b.shape, "layout": b.layout} for b in boundaries],
        boundaries=boundaries, image=image_size_or_none(graph))
    if check:
        found.tol = tol
        diffs = check_branches(graph, boundaries)
        for block in found.blocks:
            block["branch_max_abs_diff"] = diffs[block["name"]]
            block["branch_ok"] = diffs[block["name"]] <= tol
    return found
