"""Small JAX / Flax teachers for the exporter tests and the interop fixtures.

Factories for ``amalgam export-teacher jax tests.frameworks.jax.models:FACTORY``:
:func:`small_cnn` (an NNX module) and :func:`plain_mlp` (a function with its
parameters). ``python -m tests.frameworks.jax.models OUT.msgpack`` writes weights
for :func:`small_cnn` (another seed, non-trivial BatchNorm statistics).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization


class SmallCNN(nnx.Module):
    """conv-BN-ReLU-pool blocks, global average pool, a 5-logit head (NHWC)."""

    def __init__(self, rngs, channels=(8, 16, 32, 64), n_out=5, pool_strides=(2, 2)):
        widths = (1, *channels)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.norms = nnx.List([nnx.BatchNorm(b, rngs=rngs) for b in channels])
        self.head = nnx.Linear(channels[-1], n_out, rngs=rngs)
        self.pool_strides = pool_strides

    def __call__(self, x):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = nnx.relu(norm(conv(x)))
            if i < len(self.convs) - 1:
                x = nnx.max_pool(x, window_shape=(2, 2), strides=self.pool_strides)
        return self.head(x.mean(axis=(1, 2)))


def small_cnn(seed=0):
    return SmallCNN(nnx.Rngs(seed))


def plain_mlp(seed=0):
    """``(fn, params)``: a two-layer perceptron on flattened 28x28 images."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "hidden": {"w": jax.random.normal(k1, (784, 32)) * 0.05, "b": jnp.zeros(32)},
        "out": {"w": jax.random.normal(k2, (32, 3)) * 0.1, "b": jnp.zeros(3)},
    }

    def fn(p, x):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["hidden"]["w"] + p["hidden"]["b"])
        return h @ p["out"]["w"] + p["out"]["b"]

    return fn, params


def trained_like_state(seed=1):
    """Pure-dict state of a :func:`small_cnn` with another seed and non-trivial BatchNorm statistics."""
    state = nnx.to_pure_dict(nnx.state(small_cnn(seed)))
    rng = np.random.default_rng(seed)
    for norm in state["norms"].values():
        norm["mean"] = rng.normal(0, 0.1, norm["mean"].shape).astype("float32")
        norm["var"] = rng.uniform(0.5, 1.5, norm["var"].shape).astype("float32")
    return state


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(serialization.msgpack_serialize(trained_like_state()))
