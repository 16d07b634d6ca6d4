"""Cutting a teacher's head down to the chosen tasks.

METHOD.md: "Heads are cut down to the chosen tasks: a teacher's outputs for tasks
that were not chosen are dropped." Where an output is produced by a ``Gemm`` (or
``MatMul`` followed by ``Add``) with constant weights, the rows of the dropped
tasks are removed from the weights themselves, so the student does not carry
them; otherwise a ``Gather`` on the last axis selects the kept logits.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amalgam.runtime.errors import BadInputError
from amalgam.runtime.graph import consumers, prune_dead
from amalgam.runtime.taps import infer_shapes


def _initializers(model):
    return {t.name: t for t in model.graph.initializer}


def _replace_initializer(model, name, array):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(array.astype(numpy_helper.to_array(t).dtype), name)
            )
            return


def _slice_gemm(model, node, keep):
    """Keep output columns ``keep`` of a Gemm whose B (and C) are initializers."""
    inits = _initializers(model)
    if len(node.input) < 2 or node.input[1] not in inits or len(consumers(model, node.input[1])) != 1:
        return False
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    w = numpy_helper.to_array(inits[node.input[1]])
    _replace_initializer(model, node.input[1], w[keep] if trans_b else w[:, keep])
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits or len(consumers(model, node.input[2])) != 1:
            return False
        c = numpy_helper.to_array(inits[node.input[2]])
        if c.ndim >= 1 and c.shape[-1] > 1:
            _replace_initializer(model, node.input[2], c[..., keep])
    return True


def _slice_matmul_add(model, add, keep):
    """Keep columns ``keep`` of ``MatMul(x, W) + b`` with W and b initializers."""
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    mm = next(
        (producers.get(i) for i in add.input if producers.get(i) is not None and producers[i].op_type == "MatMul"), None
    )
    bias = next((i for i in add.input if i in inits), None)
    if mm is None or bias is None or mm.input[1] not in inits:
        return False
    if len(consumers(model, mm.output[0])) != 1 or len(consumers(model, mm.input[1])) != 1:
        return False
    w = numpy_helper.to_array(inits[mm.input[1]])
    b = numpy_helper.to_array(inits[bias])
    _replace_initializer(model, mm.input[1], w[..., keep])
    _replace_initializer(model, bias, b[..., keep])
    return True


def prune_outputs(model, keep):
    """A copy of ``model`` whose outputs keep only the given last-axis indices.

    ``keep`` maps an output name to the sorted indices to keep; outputs absent from
    it are removed from the graph. Output names stay the same; the kept logits are
    renumbered 0..k-1 in the order given.
    """
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    outputs = {o.name: o for o in pruned.graph.output}
    for name in keep:
        if name not in outputs:
            raise BadInputError(f"output {name!r} is not an output of the graph; outputs: {sorted(outputs)}")
    del pruned.graph.output[:]
    producers = {o: n for n in pruned.graph.node for o in n.output}
    for name, indices in keep.items():
        indices = [int(i) for i in indices]
        node = producers.get(name)
        sliced = False
        if node is not None and not any(o.name == name for o in pruned.graph.input):
            if node.op_type == "Gemm":
                sliced = _slice_gemm(pruned, node, indices)
            elif node.op_type == "Add":
                sliced = _slice_matmul_add(pruned, node, indices)
        if sliced:
            pruned.graph.output.append(helper.make_empty_tensor_value_info(name))
            continue
        full = f"{name}__full"
        for n in pruned.graph.node:
            n.output[:] = [full if o == name else o for o in n.output]
            n.input[:] = [full if i == name else i for i in n.input]
        idx_name = f"{name}__kept_indices"
        pruned.graph.initializer.append(numpy_helper.from_array(np.asarray(indices, dtype=np.int64), idx_name))
        pruned.graph.node.append(helper.make_node("Gather", [full, idx_name], [name], axis=-1, name=f"{name}__prune"))
        pruned.graph.output.append(helper.make_empty_tensor_value_info(name))
    prune_dead(pruned.graph)
    return infer_shapes(pruned)
