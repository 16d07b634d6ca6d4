"""This process's place in a torchrun job: torch.distributed set up from the environment.

``torchrun --nproc-per-node N -m amalgam amalgamate CONFIG`` starts N processes
with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and the rendezvous
address in the environment; plain ``amalgam`` sets none of them and is world size 1.
Both run the same code: :func:`init_from_env` returns a :class:`Ranks`, and every
helper on it does nothing at world size 1 (no process group is created).

Backend: NCCL when the run trains on CUDA and a GPU is there (each rank then takes
the GPU ``LOCAL_RANK``), gloo otherwise (CPU).
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from amalgam.runtime.errors import AmalgamError


@dataclass(frozen=True)
class Ranks:
    """World size, rank, and this node's share of the job (torchrun's names)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self):
        """Rank 0 writes what the run keeps (checkpoints, metrics, reports)."""
        return self.rank == 0

    @property
    def restarted(self):
        """True in a process torchrun restarted (``--max-restarts``): the run resumes."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_gather(self, obj):
        """Every rank's ``obj`` (picklable, small: eval sums, chunk lists), in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn, *args, **kwargs):
        """``fn`` run by rank 0 alone; its result, or the input error it raised, on every rank."""
        if self.world == 1:
            return fn(*args, **kwargs)
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except AmalgamError as e:
                error = e
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def shard(self, indices):
        """This rank's share of one global batch ``indices``, as DistributedSampler splits it:
        padded by wrapping around to a multiple of ``world``, then every ``world``-th row
        from ``rank``; every rank gets the same number of rows."""
        indices = np.asarray(indices)
        if self.world == 1:
            return indices
        pad = -len(indices) % self.world
        return np.concatenate([indices, np.resize(indices, pad)])[self.rank :: self.world]

    def split(self, indices):
        """This rank's rows of ``indices`` for evaluation: every ``world``-th from ``rank``, no padding."""
        return np.asarray(indices)[self.rank :: self.world]

    def data_parallel(self, modules, step):
        """``step(idx) -> loss`` with the gradients of the trainable parameters of ``modules``
        averaged across ranks (DistributedDataParallel). Freeze first: DDP syncs only the
        parameters that require grad when it is built. At world size 1, ``step`` itself."""
        if self.world == 1:
            return step
        return DistributedDataParallel(_Step(modules, step), find_unused_parameters=False)

    def sum(self, values):
        """Element-wise sum over ranks of a tuple of floats (eval sums, loss totals)."""
        return tuple(float(sum(v)) for v in zip(*self.all_gather(tuple(values))))

    def device(self, device):
        """The torch device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a job."""
        device = torch.device(device)
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return device


class _Step(torch.nn.Module):
    """One training step as a module, so that DDP sees the phase's modules and its forward."""

    def __init__(self, modules, step):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules.values())
        self.step = step

    def forward(self, idx):
        return self.step(idx)


def _env_int(name, default):
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_from_env(device="cpu"):
    """The :class:`Ranks` of this process; joins the process group when ``WORLD_SIZE > 1``."""
    world = _env_int("WORLD_SIZE", 1)
    ranks = Ranks(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", world))
    if world > 1 and not dist.is_initialized():
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(ranks.local_rank)
        store, _, _ = next(dist.rendezvous("env://"))
        # torchrun's store outlives a restart: without a prefix per attempt, a restarted
        # job may read the dead processes' addresses (pytorch/pytorch#167288)
        attempt = dist.PrefixStore(f"amalgam/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if cuda else "gloo", store=attempt, rank=ranks.rank, world_size=world)
    return ranks


def close():
    """Leave the process group (at the end of a command, so torchrun sees a clean exit)."""
    if dist.is_initialized():
        dist.destroy_process_group()
