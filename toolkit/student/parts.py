"""Building the TargetNet's parts from the teachers' ONNX graphs.

* trunk block ``l`` = the reference teacher's graph between boundaries ``l-1``
  and ``l`` (block 1 starts at the input), converted to a trainable module and
  kept (``student.init: teacher``) or re-initialised with a BatchNorm after each
  convolution (``random``);
* branch ``(t, l)`` = teacher ``t``'s layers after its boundary ``l``, head cut
  down to ``t``'s chosen tasks (runtime.heads), behind a fresh channel gate and,
  where widths or layouts differ, an adapter (a ViT's branch after a token boundary:
  a map-to-tokens adapter); an output-only teacher's branch is a fresh head.

Every part keeps the ONNX graph it was converted from (``Part.graph``), so a
trained student can be rebuilt from the run directory with no user code.
"""

import copy
from dataclasses import dataclass

from torch import nn

from amalgam.runtime.convert import to_torch
from amalgam.runtime.cut import cut_block, cut_branch, cut_prefix
from amalgam.runtime.heads import prune_outputs
from amalgam.toolkit.student.adapters import make_adapter, to_nchw
from amalgam.toolkit.student.gates import ChannelGate
from amalgam.toolkit.student.norm import add_batchnorm, kaiming_init
from amalgam.toolkit.student.prune import prune_width
from amalgam.toolkit.student.targetnet import Branch, FreshHead, TaskSlot
from amalgam.toolkit.student.width import scale_width


@dataclass
class Part:
    """A converted sub-graph and the ONNX graph it came from (None for fresh heads)."""

    module: object
    graph: object


def trunk_graphs(reference):
    """The reference teacher's graph cut into its blocks, in order."""
    names = [b.name for b in reference.boundaries]
    graphs = [cut_prefix(reference.graph, names[0])]
    graphs += [cut_block(reference.graph, a, b) for a, b in zip(names, names[1:])]
    return graphs


def trunk_blocks(graphs, init, width, seed, converted=None):
    """The trunk's blocks from their graphs: the teacher's weights (``init: teacher``), those
    pruned to ``width`` by filter L1 norm (``pruned``; toolkit.student.prune), or
    re-initialised with a BatchNorm after each convolution and ``width`` x the channels
    (``random``; toolkit.student.norm, toolkit.student.width). Block ``i`` is seeded ``seed + i``.
    ``converted``: the graphs already converted (``to_torch``), taken as copies, so that
    trying several widths converts the graphs once."""
    blocks = copy.deepcopy(converted) if converted is not None else [to_torch(g) for g in graphs]
    if init == "pruned":
        return prune_width(blocks, width)
    if init != "random":
        return blocks
    blocks = scale_width([add_batchnorm(b) for b in blocks], width)
    return [kaiming_init(b, seed + i) for i, b in enumerate(blocks, start=1)]


def head_plan(teacher):
    """Output -> kept logit indices for a teacher's chosen tasks, and each task's slot."""
    keep, slots = {}, []
    for task in teacher.tasks:
        cols = keep.setdefault(task.output, [])
        if task.kind == "binary":
            cols.append(task.index or 0)
            slots.append((task, task.output, len(cols) - 1, None, None))
        else:
            start, stop = task.slice or (0, teacher.runner.output_width(task.output))
            slots.append((task, task.output, None, len(cols), len(cols) + stop - start))
            cols.extend(range(start, stop))
    order = list(keep)
    return keep, [TaskSlot(t.name, t.kind, order.index(o), i, a, b) for t, o, i, a, b in slots]


def branch_graph(teacher, block):
    """Teacher layers after boundary ``block``, outputs cut down to the chosen tasks."""
    keep, slots = head_plan(teacher)
    graph = cut_branch(teacher.graph, teacher.boundary(block).name, list(keep))
    return prune_outputs(graph, keep), slots


def feature_shape(boundary):
    """(C, H, W) of a boundary, NCHW order; a token boundary's patch grid as a map (D, h, w)."""
    if boundary.kind == "tokens":
        return (boundary.shape[2], *boundary.grid)
    return to_nchw(boundary.shape[1:], boundary.layout)


def make_branch(teacher, block, trunk_shape, gate_reduction, project=False):
    """A branch leaving a trunk feature of shape ``trunk_shape`` (C, H, W) after ``block``.

    ``project``: give the adapter a 1x1 conv even where widths agree (a teacher
    whose channels need not line up with the trunk's)."""
    if not teacher.structured:
        keep, slots = head_plan(teacher)
        width = sum(len(v) for v in keep.values())
        build = {"gate": [trunk_shape[0], gate_reduction], "adapter": None, "fresh_head": [trunk_shape[0], width]}
        return Part(build_branch(build, None, _flatten_slots(slots, keep)), None)
    graph, slots = branch_graph(teacher, block)
    target = teacher.boundary(block)
    adapter = [list(trunk_shape), list(feature_shape(target)), target.layout, project]
    if target.kind == "tokens":
        adapter[2:] = ["tokens", True, [target.extra_tokens, target.extra_at]]
    build = {"gate": [trunk_shape[0], gate_reduction], "adapter": adapter, "fresh_head": None}
    return Part(build_branch(build, to_torch(graph), slots), graph)


def build_branch(build, body, slots):
    """A Branch from its recorded construction arguments (``Branch.build``) and body."""
    gate = ChannelGate(*build["gate"])
    adapter = make_adapter(*build["adapter"]) if build["adapter"] else nn.Identity()
    if build["fresh_head"]:
        body = FreshHead(*build["fresh_head"])
    branch = Branch(gate, adapter, body, slots)
    branch.build = build
    return branch


def _flatten_slots(slots, keep):
    """Slots of an output-only teacher: all kept logits side by side in one fresh output."""
    offsets, total = {}, 0
    for output, cols in keep.items():
        offsets[output] = total
        total += len(cols)
    order = list(keep)
    out = []
    for s in slots:
        base = offsets[order[s.output]]
        if s.kind == "binary":
            out.append(TaskSlot(s.name, s.kind, 0, base + s.index))
        else:
            out.append(TaskSlot(s.name, s.kind, 0, None, base + s.start, base + s.stop))
    return out
