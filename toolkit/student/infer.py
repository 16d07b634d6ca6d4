"""Running a TargetNet on numpy arrays: rows to tensors, task logits back as arrays."""

import numpy as np
import torch

PREDICT_BATCH = 512


def to_tensor(array, idx, device):
    """Rows ``idx`` of ``array`` as a float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array[idx], dtype=np.float32)).to(device)


@torch.no_grad()
def predict(net, inputs, indices=None, device="cpu"):
    """Task logits of ``net`` on ``inputs`` (or the rows ``indices``), as numpy arrays."""
    net.eval()
    indices = np.arange(len(inputs)) if indices is None else np.asarray(indices)
    chunks = {}
    for start in range(0, len(indices), PREDICT_BATCH):
        out = net.forward_dict(to_tensor(inputs, indices[start : start + PREDICT_BATCH], device))
        for name, value in out.items():
            chunks.setdefault(name, []).append(value.cpu().numpy())
    return {name: np.concatenate(v) for name, v in chunks.items()}
