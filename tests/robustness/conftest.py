"""Fixtures of the robustness suite: small real (untrained) teachers and data, and
the CLI run in-process."""

import pytest

from tests.builders import PlainCNN, ResidualCNN, export, randomize_bn
from tests.robustness.contract import run_cli
from tests.synthetic import SIZE, make_images, save_npz


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Untrained (random) 16x16 teachers and a small npz dataset: enough to reach
    every check, which is all a bad-input test needs."""
    root = tmp_path_factory.mktemp("robust-assets")
    shape = (2, 1, SIZE, SIZE)
    export(randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)), root / "a.onnx", input_shape=shape)
    export(
        randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)),
        root / "b.onnx",
        opset=17,
        dynamo=False,
        input_shape=shape,
    )
    export(
        randomize_bn(ResidualCNN(channels=(4, 8, 8))), root / "residual.onnx", opset=17, dynamo=False, input_shape=shape
    )
    save_npz(root / "train.npz", *make_images(96, seed=2))
    return root


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: ``amalgam ARGS`` in-process, see :func:`run_cli`."""
    return lambda *args: run_cli(capsys, *args)
