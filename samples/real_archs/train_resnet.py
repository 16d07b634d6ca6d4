"""Teacher R: torchvision ResNet-18 (random init), five binary tasks (T-shirt/top,
Trouser, Pullover, Dress, Coat), trained with labels on train[0:10000] at 32x32 RGB,
exported to ONNX.

    .venv/bin/python -m samples.real_archs.train_resnet runs/real_archs/resnet18.onnx

The epoch kept is the one with the best mean F1 on a labeled validation slice
(train[50000:52000]); the export (exporters.torch_export: dynamo, dynamic batch, eval
mode) is checked against PyTorch under ONNX Runtime.
"""

import torch
import torchvision
from torch.nn import functional as F

from amalgam.exporters.torch_export import export_torch
from samples.real_archs.common import CLASSES, SIZE, TeacherData, mean_f1, parse_args


def rgb32(images):
    """(n, 28, 28) grey in [0, 1] -> (n, 3, 32, 32): bilinear, half-pixel centres, grey repeated."""
    x = F.interpolate(torch.from_numpy(images[:, None]), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1)


def train(x, y, valid_x, valid_y, epochs, seed, batch=64, lr=1e-3):
    """Adam with cosine decay; returns the best epoch's model and its validation F1."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=y.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    y = torch.from_numpy(y)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        f1 = mean_f1(predict(model, valid_x), valid_y)
        print(f"epoch {epoch + 1}: validation mean F1 {f1:.4f}", flush=True)
        if f1 > best:
            best, best_state = f1, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), best


@torch.no_grad()
def predict(model, x):
    model.eval()
    return torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)]).numpy()


def main():
    args = parse_args(__doc__, "ONNX file to write")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = TeacherData.load(args.data, "resnet")
    valid_x, test_x = rgb32(data.valid_x), rgb32(data.test_x)
    model, f1 = train(rgb32(data.train_x), data.train_y, valid_x, data.valid_y, args.epochs, args.seed)
    print(data.summary(f1, predict(model, test_x)))
    tasks = [{"name": CLASSES[c], "output": "logits", "index": k, "kind": "binary"} for k, c in enumerate(data.classes)]
    export_torch(model, test_x[:2], args.out, input_names=["input"], output_names=["logits"], tasks=tasks)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
