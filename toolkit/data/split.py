"""The holdout split: a fixed fraction of the unlabeled training images kept out of
training, for branch-out decisions and agreement measures (never the test set)."""

import numpy as np


def split_holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, holdout indices), each sorted; the same for the same (n, fraction,
    seed). A non-zero fraction keeps at least one image on each side when n >= 2."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction: expected 0 <= fraction < 1, found {fraction}")
    count = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        count = min(max(count, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])
