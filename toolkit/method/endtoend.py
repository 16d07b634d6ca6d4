"""End-to-end training of an assembled TargetNet on the teachers' outputs.

Used twice: the fine-tune (METHOD.md, step 4: all layers trainable, branches
included, the same output losses) and the multi-teacher KD baseline (the same
final architecture trained end to end from the start, as KamalEngine and
torchdistill do), so that one command compares the two under one harness.
"""

import numpy as np
import torch

from toolkit.method.loop import run_phase
from toolkit.method.losses import task_loss
from toolkit.student.adapters import fit_adapter
from toolkit.student.infer import to_tensor

FIT_SAMPLES = 1024


def task_kinds(net):
    return {s.name: s.kind for b in net.branches.values() for s in b.slots}


def param_groups(net, head_lr_mult):
    """Trunk, gates and adapters at the base rate; the teachers' layers at ``head_lr_mult`` x."""
    bodies = {id(p) for b in net.branches.values() for p in b.body.parameters()}
    base = [p for p in net.parameters() if id(p) not in bodies]
    heads = [p for b in net.branches.values() for p in b.body.parameters()]
    return [(base, 1.0), (heads, head_lr_mult)]


def unfreeze(net):
    for p in net.parameters():
        p.requires_grad_(True)
    return net


@torch.no_grad()
def fit_net_adapters(net, data, indices, device):
    """Least-squares start for every branch adapter of a fresh net (the KD baseline
    gets the same start as the layer-wise student's stage branches), on the trunk in
    train mode as the first steps will run it."""
    sample = np.sort(np.asarray(indices)[:FIT_SAMPLES])
    h = to_tensor(data.inputs, sample, device)
    net.eval()
    for block, module in enumerate(net.trunk, start=1):
        h = module.train()(h)
        for key, point in net.branch_points.items():
            teacher = key.split("@")[0]
            if point == block and (teacher, block) in data.taps:
                branch = net.branches[key]
                fit_adapter(branch.adapter, branch.gate(h), to_tensor(data.taps[(teacher, block)], sample, device))


def train_end_to_end(ctx, phase, net, data, indices, epochs):
    training, device = ctx.training, ctx.device
    net = unfreeze(net.to(device))
    kinds = task_kinds(net)

    def step(idx):
        out = net.forward_dict(to_tensor(data.inputs, idx, device))
        return sum(task_loss(kinds[name], logits, to_tensor(data.logits[name], idx, device),
                             training.targets, training.temperature) for name, logits in out.items())

    run_phase(ctx, phase, {"net": net}, param_groups(net, training.head_lr_mult), step, indices, epochs, net.train)
    return net.eval()
