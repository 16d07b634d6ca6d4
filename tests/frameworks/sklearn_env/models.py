"""Small scikit-learn teachers on synthetic 28x28 images (flattened), for the
exporter tests and the interop fixture.

``python -m tests.frameworks.sklearn.models OUT.skops`` writes the fixture forest.
"""

import sys

import numpy as np
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier


def images(n=300, seed=0):
    """Images ``(n, 784)`` in [0, 1] and a 3-class label: which third of the image is brightest."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28))
    x[np.arange(n), :, rng.integers(0, 28, n)] += 1.0
    x = np.clip(x / 1.5, 0, 1)
    y = np.argmax([x[:, :, a:b].mean(axis=(1, 2)) for a, b in ((0, 9), (9, 19), (19, 28))], axis=0)
    return x.reshape(n, -1), y


def small_forest(seed=0):
    x, y = images(seed=seed)
    return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=seed).fit(x, y)


if __name__ == "__main__":
    sio.dump(small_forest(), sys.argv[1])
