"""Teacher A: the 4-block CNN in PyTorch, five binary tasks (T-shirt/top, Trouser,
Pullover, Dress, Coat), trained with labels on train[0:10000], exported to ONNX.

    .venv/bin/python -m samples.fashion_mnist.train_teacher_torch samples/fashion_mnist/teacher_a.onnx

The epoch kept is the one with the best mean F1 on a labeled validation slice
(train[50000:55000]); the export (exporters.torch_export, eval mode, BatchNorm folded
into the convolutions) is checked against PyTorch under ONNX Runtime.
"""

import torch
from torch import nn

from amalgam.exporters.torch_export import export_torch
from samples.fashion_mnist.common import CHANNELS, CLASSES, TeacherData, mean_f1, parse_args


class TeacherCNN(nn.Module):
    """conv3x3-BN-ReLU blocks (max-pool between them), global average pool, 5 logits."""

    def __init__(self, channels=CHANNELS, n_out=5):
        super().__init__()
        widths = (1, *channels)
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], n_out)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def train(images, targets, valid_x, valid_y, epochs, seed, batch=64, lr=2e-3):
    """Adam with cosine decay; returns the best epoch's model."""
    torch.manual_seed(seed)
    model = TeacherCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(images) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, y = torch.from_numpy(images[:, None]), torch.from_numpy(targets)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        f1 = mean_f1(predict(model, valid_x), valid_y)
        print(f"epoch {epoch + 1}: validation mean F1 {f1:.4f}")
        if f1 > best:
            best, best_state = f1, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), best


@torch.no_grad()
def predict(model, images):
    model.eval()
    return torch.cat([model(torch.from_numpy(images[i : i + 1024, None])) for i in range(0, len(images), 1024)]).numpy()


def main():
    args = parse_args(__doc__, "ONNX file to write")
    data = TeacherData.load(args.data, "a")
    model, f1 = train(data.train_x, data.train_y, data.valid_x, data.valid_y, args.epochs, args.seed)
    print(data.summary(f1, predict(model, data.test_x)))
    tasks = [{"name": CLASSES[c], "output": "logits", "index": k, "kind": "binary"} for k, c in enumerate(data.classes)]
    export_torch(
        model,
        torch.from_numpy(data.test_x[:2, None]),
        args.out,
        input_names=["input"],
        output_names=["logits"],
        tasks=tasks,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
