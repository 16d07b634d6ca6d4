"""Checkpoints written after every epoch, atomically; read back without pickle.

A checkpoint holds the state dicts of a phase's modules, its optimiser and
schedule, and the number of epochs done. It is written to a temporary name and
renamed, so a killed run leaves either the old checkpoint or the new one. It is
read with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

import warnings
from pathlib import Path

import torch

from amalgam.runtime.errors import BadInputError
from amalgam.runtime.files import atomic_path


def save_checkpoint(path, modules, optimizer=None, schedule=None, **meta):
    state = {"modules": {k: m.state_dict() for k, m in modules.items()}, "meta": meta}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if schedule is not None:
        state["schedule"] = schedule.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path):
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle protocol: the error below says it
            warnings.simplefilter("ignore")
            return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInputError(
            f"{path}: not a readable checkpoint of this toolkit ({type(e).__name__}); "
            f"checkpoints are read as weights only, never as pickled code: "
            f"start a new run (--out) instead of --resume"
        ) from e


def restore(state, modules, optimizer=None, schedule=None):
    for key, module in modules.items():
        module.load_state_dict(state["modules"][key])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and "schedule" in state:
        schedule.load_state_dict(state["schedule"])
    return state["meta"]
