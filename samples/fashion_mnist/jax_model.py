"""Teacher B's network in JAX/Flax NNX: the same 4-block CNN as teacher A (NHWC).

Factory for the exporter:
``amalgam export-teacher jax samples.fashion_mnist.jax_model:teacher_cnn --weights B.msgpack ...``
"""

from flax import nnx

from samples.fashion_mnist.common import CHANNELS


class TeacherCNN(nnx.Module):
    """conv3x3-BN-ReLU blocks (max-pool between them), global average pool, 5 logits."""

    def __init__(self, rngs, channels=CHANNELS, n_out=5):
        widths = (1, *channels)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.norms = nnx.List([nnx.BatchNorm(b, momentum=0.9, rngs=rngs) for b in channels])
        self.head = nnx.Linear(channels[-1], n_out, rngs=rngs)

    def __call__(self, x):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i:
                x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = nnx.relu(norm(conv(x)))
        return self.head(x.mean(axis=(1, 2)))


def teacher_cnn(seed=0):
    return TeacherCNN(nnx.Rngs(seed))
