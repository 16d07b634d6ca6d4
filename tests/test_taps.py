import numpy as np
import onnx
import pytest
import torch

from amalgam.runtime.errors import UnknownTapError
from amalgam.runtime.session import make_session
from amalgam.runtime.taps import add_taps, run_with_taps, tensor_names
from tests.builders import PlainCNN, export, randomize_bn


@pytest.mark.parametrize("opset,dynamo", [(17, False), (18, True)])
def test_taps_equal_torch_features(tmp_path, opset, dynamo):
    model = randomize_bn(PlainCNN())
    path = export(model, tmp_path / "t.onnx", opset=opset, dynamo=dynamo)
    proto = onnx.load(path)
    relus = [n.output[0] for n in proto.graph.node if n.op_type == "Relu"]
    assert len(relus) == 4
    feats = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: feats.append(o.detach().numpy()))
        for m in model.features
        if isinstance(m, torch.nn.ReLU)
    ]
    x = np.random.randn(3, 1, 28, 28).astype(np.float32)
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    sess = make_session(add_taps(proto, relus))
    taps = run_with_taps(sess, {"x": x}, relus)
    for name, ref in zip(relus, feats):
        np.testing.assert_allclose(taps[name], ref, atol=1e-5)


def test_unknown_tap_lists_closest(tmp_path):
    proto = onnx.load(export(PlainCNN(), tmp_path / "t.onnx", opset=17, dynamo=False))
    name = [n for n in tensor_names(proto) if "Relu" in n or "relu" in n][0]
    with pytest.raises(UnknownTapError) as e:
        add_taps(proto, [name + "_typo"])
    assert name in str(e.value) and "closest" in str(e.value)
