"""The keras.applications half of ``samples/zoo.py``: runs in .venv-keras (TensorFlow, no torch).

    .venv-keras/bin/python samples/zoo_keras.py --list
    .venv-keras/bin/python samples/zoo_keras.py --probe NAME --save NAME.keras

``--list`` prints ``{"keras": version, "models": [...]}``: every classifier that
``keras.applications`` exports (its capitalised names). ``--probe`` prints the model's
``{"params", "size", "skipped"}`` as samples/zoo.py's torchvision probe does: over
``MAX_PARAMS`` it is skipped; else it is built with random weights (``weights=None``),
1000 classes and no softmax (its output is logits, as a teacher's should be) at the
smallest square input of :data:`SIZES` that it takes (most take 32; the Inception
family 75, Xception 71), calibrated as tests/frameworks/keras_env/zoo.py does (each
BatchNorm takes its input's statistics on standard-normal images, so that activations
and logits stay of order 1 instead of vanishing), and saved to ``--save``.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from amalgam.runtime.quiet import framework_output  # noqa: E402
from tests.frameworks.keras_env.zoo import calibrate  # noqa: E402

SIZES = (32, 64, 75, 96, 128, 160, 224, 331)  # square inputs tried, smallest first
MAX_PARAMS = 150_000_000
CALIBRATION = 256  # standard-normal images that set the BatchNorm statistics (16 left EfficientNetB0 unstable)


def models():
    """Every classifier of keras.applications, by its name there."""
    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def build(name, size):
    """``name`` with random weights at ``size`` x ``size`` RGB, 1000 logits; a ValueError when it takes no such input."""
    factory = getattr(keras.applications, name)
    model = factory(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    model(np.zeros((1, size, size, 3), np.float32))
    return model


def probe(name, save):
    """``{"params", "size", "skipped"}``; the model built at its smallest size, calibrated and saved to ``save``."""
    keras.utils.set_random_seed(0)
    for size in SIZES:
        try:
            model = build(name, size)
        except ValueError:  # the model's own input-shape check, or a layer that runs out of pixels
            continue
        params = model.count_params()
        if params > MAX_PARAMS:
            return {"params": params, "size": None, "skipped": f"{params / 1e6:.0f}M params > {MAX_PARAMS / 1e6:.0f}M"}
        images = np.random.default_rng(0).standard_normal((CALIBRATION, size, size, 3), dtype=np.float32)
        calibrate(model, images).save(save)
        return {"params": params, "size": size, "skipped": None}
    return {"params": None, "size": None, "skipped": None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the classifiers keras.applications has")
    ap.add_argument("--probe", metavar="NAME", help="probe, build and save one model")
    ap.add_argument("--save", help="--probe: the .keras file to write")
    args = ap.parse_args()
    if args.list:
        print(json.dumps({"keras": keras.__version__, "models": models()}))
        return
    if args.probe not in models():
        sys.exit(f"error: {args.probe!r} is not a keras.applications model")
    with framework_output(f"build {args.probe}"):  # Keras warns that no weights exist for small inputs
        found = probe(args.probe, args.save)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
