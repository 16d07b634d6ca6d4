"""Real models for tests: small CNNs built in torch and exported to ONNX.

Each builder returns an eval-mode torch module; :func:`export` writes it at a
chosen opset with the dynamo or the legacy exporter (dynamic batch axis).
"""

import onnx
import torch
import torch.nn as nn
from onnx import helper, numpy_helper


class PlainCNN(nn.Module):
    """conv-bn-relu-pool blocks, global average pool, one multi-label head."""

    def __init__(self, channels=(8, 16, 32, 64), in_ch=1, n_out=5):
        super().__init__()
        layers, c = [], in_ch
        for i, w in enumerate(channels):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_out)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class ResidualUnit(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResidualCNN(nn.Module):
    """A stem and residual units; skip connections jump over inner tensors."""

    def __init__(self, channels=(8, 16, 32), in_ch=1, n_out=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, channels[0], 3, padding=1), nn.ReLU())
        units, c = [], channels[0]
        for i, w in enumerate(channels):
            units.append(ResidualUnit(c, w, 1 if i == 0 else 2))
            c = w
        self.units = nn.Sequential(*units)
        self.head = nn.Linear(c, n_out)

    def forward(self, x):
        return self.head(self.units(self.stem(x)).mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class SECNN(nn.Module):
    """Plain blocks with a squeeze-and-excitation side path after the first."""

    def __init__(self, in_ch=1, n_out=3):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(in_ch, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.se = SqueezeExcite(8)
        self.b2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16, n_out)

    def forward(self, x):
        return self.head(self.b2(self.se(self.b1(x))).mean(dim=(2, 3)))


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def export(model, path, opset=18, dynamo=True, input_shape=(2, 1, 28, 28), input_name="x", output_name="logits"):
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch axis."""
    model = model.eval()
    x = torch.randn(*input_shape)
    kwargs = dict(input_names=[input_name], output_names=[output_name], opset_version=opset)
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kwargs["dynamic_axes"] = {input_name: {0: "batch"}, output_name: {0: "batch"}}
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, verbose=False, **kwargs)
    return path


def linear_model(weight, opset=17):
    """A one-MatMul ONNX model ``y = x @ weight`` (square weight), for file-level tests."""
    n = weight.shape[0]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", n])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", n])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear", [x], [y], [numpy_helper.from_array(weight, "w")]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def torchvision_teacher(name, path, size=32, n_out=5, seed=0):
    """A torchvision architecture (random weights, ``n_out`` logits) exported at batch 2
    on ``size`` x ``size`` RGB images."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, num_classes=n_out)
    return export(randomize_bn(model, seed), path, input_shape=(2, 3, size, size))
