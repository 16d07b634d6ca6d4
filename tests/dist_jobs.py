"""Jobs the distributed tests start under torchrun (``python -m tests.dist_jobs JOB ...``).

Each job runs real code at whatever world size torchrun gives it and writes what the
test compares (a cache folder, a weights file) into the folder it is given.
"""

import sys

import numpy as np

from amalgam.toolkit.dist import close, init_from_env


def targets(teacher_path, data_path, root, *taps):
    """The target cache of a teacher over an .npy dataset, computed by every rank's share
    (progress and any wait for another job's lock on stderr)."""
    from amalgam.runtime.cache import TargetCache
    from amalgam.runtime.cache_key import array_fingerprint
    from amalgam.runtime.session import threads_for_rank
    from amalgam.runtime.teacher import TaskSpec, Teacher

    ranks = init_from_env()
    data = np.load(data_path, mmap_mode="r")
    teacher = Teacher(
        teacher_path,
        [TaskSpec("hair", "logits", slice=(0, 5), kind="multiclass")],
        boundaries=taps,
        threads=threads_for_rank(ranks.local_world),
    )
    out = TargetCache(root).get_or_build(
        teacher,
        lambda a, b: np.asarray(data[a:b]),
        len(data),
        array_fingerprint(data),
        batch=8,
        chunk_batches=2,
        rank=ranks.rank,
        world=ranks.world,
        barrier=ranks.barrier,
        broadcast=ranks.broadcast,
    )
    print(f"rank {ranks.rank}/{ranks.world} done built={out.built}", flush=True)
    close()


def prefix(out):
    """The frozen-prefix cache of a small conv block over 1100 rows (3 batches of 512),
    written by every rank's share."""
    from pathlib import Path

    import torch

    from amalgam.toolkit.method.blockwise import PrefixFeatures

    ranks = init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
    inputs = np.random.default_rng(0).random((1100, 1, 8, 8), dtype=np.float32)
    PrefixFeatures(Path(out), inputs).extend(block, torch.device("cpu"), ranks=ranks)
    close()


def train(out, kill_at_step="0"):
    """Two epochs of run_phase on a small CNN without BatchNorm (plain SGD, MSE to fixed
    targets, global batch 16); rank 0 saves the final weights to ``out/weights.npz``.

    ``kill_at_step`` > 0: in the first attempt, the last rank SIGKILLs itself at that
    step (counted over both epochs); torchrun restarts the job, which resumes."""
    import os
    import signal
    from pathlib import Path

    import torch

    from amalgam.toolkit.config.schema import TrainingConfig
    from amalgam.toolkit.method.loop import LoopContext, Phase, run_phase
    from amalgam.toolkit.runlog import RunLog
    from tests.builders import SECNN

    ranks = init_from_env()
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((96, 1, 16, 16), dtype=np.float32))
    y = torch.from_numpy(rng.standard_normal((96, 3)).astype(np.float32))
    torch.manual_seed(0)
    model = SECNN(n_out=3)
    training = TrainingConfig(optimizer="sgd", momentum=0.0, lr=0.5, schedule="constant", batch_size=16, seed=3)
    log = RunLog(out / "metrics.jsonl" if ranks.is_main else os.devnull)
    ctx = LoopContext(training, torch.device("cpu"), log, out / "checkpoints", ranks.restarted, ranks)
    steps = [0]

    def step(idx):
        steps[0] += 1
        if int(kill_at_step) == steps[0] and not ranks.restarted and ranks.rank == ranks.world - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    run_phase(ctx, Phase("toy", {"model": model}, [(list(model.parameters()), 1.0)], step, 2), np.arange(96))
    if ranks.is_main:
        np.savez(out / "weights.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    print(f"rank {ranks.rank}/{ranks.world} restarted={ranks.restarted} steps={steps[0]}", flush=True)
    close()


def heldout(out):
    """The held-out fit (toolkit.method.endtoend.heldout_fit) of a small TargetNet (a conv
    block, one fresh head with a binary and a 3-class task) with fixed random teacher
    logits on 101 rows; each rank writes the rows its net ran on and what it got
    to ``out/rank<r>.json``."""
    import json
    from pathlib import Path

    import torch

    from amalgam.toolkit.method.endtoend import heldout_fit
    from amalgam.toolkit.student.parts import build_branch
    from amalgam.toolkit.student.targetnet import TargetNet, TaskSlot
    from amalgam.toolkit.teachers.targets import SplitData

    ranks = init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    inputs = rng.random((120, 1, 8, 8), dtype=np.float32)
    logits = {"a": rng.standard_normal(120).astype(np.float32), "m": rng.standard_normal((120, 3)).astype(np.float32)}
    slots = [TaskSlot("a", "binary", 0, index=0), TaskSlot("m", "multiclass", 0, start=1, stop=4)]
    branch = build_branch({"gate": [4, 2], "adapter": None, "fresh_head": [4, 4]}, None, slots)
    block = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
    net = TargetNet([block], {"T@1": branch}, {"T@1": 1}, ["a", "m"])
    seen = [0]
    block.register_forward_hook(lambda module, args, out: seen.__setitem__(0, seen[0] + len(out)))
    agree, excess = heldout_fit(net, SplitData(inputs, logits), np.arange(7, 108), "cpu", ranks).mean()
    Path(out, f"rank{ranks.rank}.json").write_text(json.dumps({"rows": seen[0], "fit": [agree, excess]}))
    close()


if __name__ == "__main__":
    {"targets": targets, "prefix": prefix, "train": train, "heldout": heldout}[sys.argv[1]](*sys.argv[2:])
