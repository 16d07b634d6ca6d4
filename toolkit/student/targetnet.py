"""TargetNet: the student (METHOD.md, "The student's shape"; targetnet.png).

A shared trunk of blocks, then one branch per task group. A :class:`Branch` leaves
the trunk after block ``b``: the trunk feature passes its channel gate (the
filter), an adapter where widths or layouts differ, then the teacher's own layers
after its boundary ``b`` (cut from its ONNX graph) whose head is cut down to the
chosen tasks. A teacher with no usable block structure gets a small fresh head
(:class:`FreshHead`) instead: it teaches through its outputs alone.

Tasks are read out of the branch outputs with a :class:`TaskSlot` per task.
"""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TaskSlot:
    """Where a task's logits are among a branch's outputs."""

    name: str
    kind: str
    output: int  # position among the branch body's outputs
    index: int | None = None  # binary: the logit's column
    start: int | None = None  # multiclass: the columns [start, stop)
    stop: int | None = None

    def read(self, outputs):
        y = outputs[self.output]
        if self.kind == "binary":
            return y[:, self.index or 0] if y.dim() > 1 else y
        return y if self.start is None else y[:, self.start : self.stop]


class FreshHead(nn.Module):
    """Global average pool and a linear layer: the branch of an output-only teacher (ours)."""

    def __init__(self, channels, n_logits, layout="NCHW"):
        super().__init__()
        self.spatial = (1, 2) if layout == "NHWC" else (2, 3)
        self.linear = nn.Linear(channels, n_logits)

    def forward(self, h):
        return self.linear(h.mean(dim=self.spatial))


def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


class Branch(nn.Module):
    """gate -> adapter -> teacher layers after the boundary -> the chosen tasks' logits."""

    def __init__(self, gate, adapter, body, slots):
        super().__init__()
        self.gate, self.adapter, self.body = gate, adapter, body
        self.slots = list(slots)

    @property
    def tasks(self):
        return [s.name for s in self.slots]

    def features(self, h):
        """The gated, adapted trunk feature: what the feature hint compares with the teacher's tap."""
        return self.adapter(self.gate(h))

    def read(self, body_outputs, tasks=None):
        """The tasks' logits from the body's outputs (all of the branch's tasks, or ``tasks``)."""
        outputs = _as_tuple(body_outputs)
        return {s.name: s.read(outputs) for s in self.slots if tasks is None or s.name in tasks}

    def forward(self, h, tasks=None):
        return self.read(self.body(self.features(h)), tasks)


class TargetNet(nn.Module):
    """trunk blocks + branches; ``branch_points[key]`` is the block after which a branch leaves.

    ``forward`` returns the chosen tasks' logits as a tuple in ``task_order`` (ONNX
    export names them); ``forward_dict`` returns them by name.
    """

    def __init__(self, trunk, branches, branch_points, task_order, groups=None):
        super().__init__()
        self.trunk = nn.ModuleList(trunk)
        self.branches = nn.ModuleDict(branches)
        self.branch_points = dict(branch_points)
        self.task_order = list(task_order)
        # branch key -> the tasks it serves in this net (a branch may carry more)
        self.groups = {k: list(v) for k, v in (groups or {k: b.tasks for k, b in branches.items()}).items()}

    @property
    def depth(self):
        return max(self.branch_points.values())

    def forward_dict(self, x, features=None):
        """The tasks' logits by name; ``features``, a list if given, gets each trunk block's
        output in order (what the feature baselines regress)."""
        by_block = {}
        for key, b in self.branch_points.items():
            by_block.setdefault(b, []).append(key)
        out, h = {}, x
        for block in range(1, self.depth + 1):
            h = self.trunk[block - 1](h)
            if features is not None:
                features.append(h)
            for key in by_block.get(block, ()):
                out.update(self.branches[key](h, self.groups[key]))
        return out

    def forward(self, x):
        out = self.forward_dict(x)
        return tuple(out[t] for t in self.task_order)


def freeze(module):
    """Frozen teacher layers: no gradients to their weights, eval mode kept by the trainer."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def count_params(module):
    return sum(p.numel() for p in module.parameters())
