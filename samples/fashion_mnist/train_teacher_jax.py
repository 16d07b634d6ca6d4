"""Teacher B: the 4-block CNN in JAX/Flax NNX, five binary tasks (Sandal, Shirt,
Sneaker, Bag, Ankle boot), trained with labels on train[10000:20000].

    .venv-jax/bin/python -m samples.fashion_mnist.train_teacher_jax runs/teachers/teacher_b.msgpack
    .venv-jax/bin/amalgam export-teacher jax samples.fashion_mnist.jax_model:teacher_cnn \
        --weights runs/teachers/teacher_b.msgpack --input-shape 1,28,28,1 --nchw \
        --tasks "logits:sandal,shirt,sneaker,bag,boot" -o samples/fashion_mnist/teacher_b.onnx

Same recipe as teacher A (Adam 2e-3, cosine decay, batch 64, the epoch with the best
validation mean F1 on train[50000:55000] kept); writes the weights as a Flax msgpack.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from samples.fashion_mnist.common import TeacherData, mean_f1, parse_args
from samples.fashion_mnist.jax_model import teacher_cnn


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(m):
        return optax.sigmoid_binary_cross_entropy(m(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def logits(model, x):
    return model(x)


def predict(model, images):
    model.eval()
    out = np.concatenate(
        [np.asarray(logits(model, jnp.asarray(images[i : i + 1000, ..., None]))) for i in range(0, len(images), 1000)]
    )
    model.train()
    return out


def train(images, targets, valid_x, valid_y, epochs, seed, batch=64, lr=2e-3):
    model = teacher_cnn(seed)
    n_batches = len(images) // batch
    tx = optax.adam(optax.cosine_decay_schedule(lr, epochs * n_batches))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        for b in range(n_batches):
            idx = order[b * batch : (b + 1) * batch]
            train_step(model, optimizer, jnp.asarray(images[idx, ..., None]), jnp.asarray(targets[idx]))
        f1 = mean_f1(predict(model, valid_x), valid_y)
        print(f"epoch {epoch + 1}: validation mean F1 {f1:.4f}")
        if f1 > best:
            best, best_state = f1, jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    nnx.update(model, best_state)
    return model, best_state, best


def main():
    args = parse_args(__doc__, "weights file to write (.msgpack)")
    data = TeacherData.load(args.data, "b")
    model, state, f1 = train(data.train_x, data.train_y, data.valid_x, data.valid_y, args.epochs, args.seed)
    print(data.summary(f1, predict(model, data.test_x)))
    with open(args.out, "wb") as f:
        f.write(serialization.msgpack_serialize(state))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
