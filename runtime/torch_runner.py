"""A parity runner over a PyTorch module (the trained student, before export).

Kept out of ``runtime.parity`` so that the comparator loads without torch.
The runner feeds inputs in ``input_names`` order and names the outputs as the
ONNX export named them, so its dict lines up with ``onnx_runner``'s.
"""

import numpy as np
import torch

from amalgam.runtime.errors import BadInputError
from amalgam.runtime.parity import as_feeds


def _named(outputs, output_names):
    if isinstance(outputs, dict):
        return dict(outputs)
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    outputs = list(outputs)
    if len(outputs) != len(output_names):
        raise BadInputError(f"the module returned {len(outputs)} outputs, but the names are {list(output_names)}")
    return dict(zip(output_names, outputs))


def torch_runner(module, input_names=("x",), output_names=("logits",), device=None):
    """``feeds -> {output name: array}`` running ``module`` in eval mode without gradients.

    ``device`` defaults to where the module's parameters are.
    """
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    module = module.eval()
    input_names, output_names = list(input_names), list(output_names)

    def run(batch):
        feeds = as_feeds(input_names, batch)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in input_names]
        with torch.no_grad():
            outputs = _named(module(*args), output_names)
        return {k: v.detach().cpu().numpy() for k, v in outputs.items()}

    run.input_names, run.output_names = input_names, output_names
    return run
