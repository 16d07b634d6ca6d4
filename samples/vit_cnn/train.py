"""One teacher of the ViT + CNN sample, trained with labels on its own slice of
Fashion-MNIST at 32x32 RGB (bilinear resize, grey repeated: the toolkit's `preprocess:
{size: [32, 32], channels: 3}`), its state dict saved for `amalgam export-teacher torch`.

    .venv/bin/python -m samples.vit_cnn.train vit runs/vit_cnn/vit.pt --epochs 6

Teacher C (cnn): T-shirt/top, Trouser, Pullover, Dress, Coat on train[0:10000];
teacher V (vit): Sandal, Shirt, Sneaker, Bag, Ankle boot on train[10000:20000]. Adam
with cosine decay (and a linear warm-up for the ViT), batch 64, BCE on the five logits;
the epoch kept is the one with the best mean F1 on train[50000:52000].
"""

import argparse
from math import cos, pi

import torch
from torch.nn import functional as F

from samples.fashion_mnist.common import DATA, read_idx, task_targets
from samples.real_archs.common import TEACHERS, VALID, TeacherData, mean_f1
from samples.real_archs.train_resnet import predict, rgb32
from samples.vit_cnn.models import FACTORIES

SLICES = {"cnn": TEACHERS["resnet"], "vit": TEACHERS["mobilenet"]}  # the same split as samples/real_archs
LR = {"cnn": 2e-3, "vit": 1e-3}


def labeled(folder, teacher):
    """The teacher's labeled slice, the validation slice and the test split."""
    classes, part = SLICES[teacher]
    images, labels = read_idx(folder, "train")
    test_x, test_y = read_idx(folder, "test")
    targets = lambda y: task_targets(y, classes)  # noqa: E731
    return TeacherData(
        classes, images[part], targets(labels[part]), images[VALID], targets(labels[VALID]), test_x, targets(test_y)
    )


def train(teacher, data, epochs, seed, batch=64):
    """The best epoch's model (by validation mean F1) and that F1."""
    torch.manual_seed(seed)
    model = FACTORIES[teacher]()
    opt = torch.optim.Adam(model.parameters(), lr=LR[teacher])
    steps = epochs * ((len(data.train_x) + batch - 1) // batch)
    warm = steps // 10 if teacher == "vit" else 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 + 0.5 * cos(pi * s / steps)
    )
    x, y, valid_x = rgb32(data.train_x), torch.from_numpy(data.train_y), rgb32(data.valid_x)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        f1 = mean_f1(predict(model, valid_x), data.valid_y)
        print(f"epoch {epoch + 1}: validation mean F1 {f1:.4f}", flush=True)
        if f1 > best:
            best, best_state = f1, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", choices=sorted(FACTORIES))
    ap.add_argument("out", help="state dict to write (.pt)")
    ap.add_argument("--data", default=str(DATA), help="folder of Fashion-MNIST IDX files")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = labeled(args.data, args.teacher)
    model, f1 = train(args.teacher, data, args.epochs, args.seed)
    print(data.summary(f1, predict(model, rgb32(data.test_x))))
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
