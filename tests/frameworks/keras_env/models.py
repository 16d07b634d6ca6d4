"""Small Keras teachers for the exporter tests and the interop fixtures.

``python -m tests.frameworks.keras.models OUT.keras`` writes the fixture CNN.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def small_cnn(seed=0, channels=(8, 16, 32, 64), n_out=5):
    """conv-BN-ReLU-pool blocks, global average pool, a 5-logit head (like tests.builders.PlainCNN)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((28, 28, 1))]
    for i, width in enumerate(channels):
        layers += [
            keras.layers.Conv2D(width, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ]
        if i < len(channels) - 1:
            layers.append(keras.layers.MaxPooling2D(2))
    model = keras.Sequential(layers + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(n_out)])
    return randomize_bn(model, seed)


def randomize_bn(model, seed=0):
    """Non-trivial moving statistics, so BatchNorm is really exported."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    gamma,
                    beta,
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 1.5, var.shape).astype("float32"),
                ]
            )
    return model


if __name__ == "__main__":
    small_cnn().save(sys.argv[1])
