"""keras.applications teachers for the zoo: real architectures, random weights, small inputs.

``python -m tests.frameworks.keras_env.zoo MODEL OUT.keras`` builds one (MODEL is a key
of :data:`ZOO`) and saves it; mk/frameworks.mk exports each with
``amalgam export-teacher keras --nchw`` and tests/test_zoo_keras.py inspects the ONNX
file with ``--check`` in the main environment.

Each model is built at 32x32 RGB (the smallest input every one of them takes),
with 5 classes and no softmax, so that the output is logits as a teacher's should be.
Random weights alone make a dead teacher: with BatchNorm statistics at mean 0 and
variance 1, activations shrink about tenfold per stage (MobileNetV2's logits are
~1e-12), and any parity check passes on numbers that small. So each model is
calibrated on standard-normal images (what ``inspect --check`` feeds, and what a
teacher's preprocessing makes of real ones): Normalization layers adapt to their input, and every
BatchNorm takes the statistics of its input (one pass in training mode with momentum
0 and dropout off), which keeps activations of order 1, and the classifier is scaled
so that the logits spread like a trained teacher's (standard deviation 1).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from amalgam.runtime.quiet import framework_output  # noqa: E402

ZOO = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
    "densenet121": "DenseNet121",
}
INPUT_SHAPE = (32, 32, 3)
CLASSES = 5


def build(name, seed=0, calibration=256):
    """The keras.applications model ``ZOO[name]`` with random weights (a fixed seed), calibrated."""
    keras.utils.set_random_seed(seed)
    factory = getattr(keras.applications, ZOO[name])
    model = factory(weights=None, input_shape=INPUT_SHAPE, classes=CLASSES, classifier_activation=None)
    return calibrate(model, np.random.default_rng(seed).standard_normal((calibration, *INPUT_SHAPE), dtype=np.float32))


def calibrate(model, images):
    """Normalization layers without given statistics adapted and BatchNorm statistics set on ``images`` (see the module's docstring)."""
    layers = list(_layers(model))
    for layer in layers:
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt(keras.Model(model.input, layer.input)(images))
    saved = {}
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            saved[layer], layer.momentum = ("momentum", layer.momentum), 0.0
        elif isinstance(layer, keras.layers.Dropout):
            saved[layer], layer.rate = ("rate", layer.rate), 0.0
    model(images, training=True)
    for layer, (attr, value) in saved.items():
        setattr(layer, attr, value)
    head = model.layers[-1]
    if isinstance(head, keras.layers.Dense):
        spread = float(np.std(model(images, training=False)))
        head.set_weights([w / spread for w in head.get_weights()])
    return model


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def main(name, out):
    if name not in ZOO:
        sys.exit(f"error: unknown zoo model {name!r}; expected one of {sorted(ZOO)}")
    with framework_output(f"build {name}"):  # Keras warns that no weights exist for 32x32 inputs
        build(name).save(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
