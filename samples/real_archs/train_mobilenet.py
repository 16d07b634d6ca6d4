"""Teacher M: keras.applications MobileNetV2 (random init), five binary tasks (Sandal,
Shirt, Sneaker, Bag, Ankle boot), trained with labels on train[10000:20000] at 32x32
RGB; writes a `.keras` file for `amalgam export-teacher keras`.

    .venv-keras/bin/python -m samples.real_archs.train_mobilenet runs/real_archs/mobilenet_v2.keras
    .venv-keras/bin/amalgam export-teacher keras runs/real_archs/mobilenet_v2.keras --nchw \\
        --tasks "logits:sandal,shirt,sneaker,bag,boot" -o runs/real_archs/mobilenet_v2.onnx

Same recipe as teacher R (Adam 1e-3 with cosine decay, batch 64, the epoch with the
best validation mean F1 on train[50000:52000] kept); BatchNorm momentum 0.9 (see
:func:`mobilenet`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from samples.real_archs.common import SIZE, TeacherData, mean_f1, parse_args  # noqa: E402


def rgb32(images):
    """(n, 28, 28) grey in [0, 1] -> (n, 32, 32, 3): bilinear, half-pixel centres, grey repeated."""
    x = tf.image.resize(images[..., None], (SIZE, SIZE), method="bilinear")
    return np.repeat(x.numpy(), 3, axis=-1)


def mobilenet(n_out, seed):
    """keras.applications.MobileNetV2 as it is (random init, ``n_out`` logits), but with
    BatchNorm momentum 0.9 instead of its 0.999, so the moving statistics that inference
    uses catch up within a training of a few hundred steps."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), weights=None, classes=n_out, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


class KeepBest(keras.callbacks.Callback):
    """After each epoch: validation mean F1; keeps the best epoch's weights."""

    def __init__(self, valid_x, valid_y):
        super().__init__()
        self.valid_x, self.valid_y, self.best, self.weights = valid_x, valid_y, -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        f1 = mean_f1(self.model.predict(self.valid_x, batch_size=500, verbose=0), self.valid_y)
        print(f"epoch {epoch + 1}: validation mean F1 {f1:.4f}", flush=True)
        if f1 > self.best:
            self.best, self.weights = f1, self.model.get_weights()


def main():
    args = parse_args(__doc__, ".keras file to write")
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = TeacherData.load(args.data, "mobilenet")
    model = mobilenet(data.train_y.shape[1], args.seed)
    steps = args.epochs * -(-len(data.train_x) // 64)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    keep = KeepBest(rgb32(data.valid_x), data.valid_y)
    model.fit(rgb32(data.train_x), data.train_y, batch_size=64, epochs=args.epochs, callbacks=[keep], verbose=0)
    model.set_weights(keep.weights)
    print(data.summary(keep.best, model.predict(rgb32(data.test_x), batch_size=500, verbose=0)))
    model.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
