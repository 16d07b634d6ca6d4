"""keras.applications teachers through ``amalgam inspect --check`` in the main environment.

MobileNetV2, ResNet50, EfficientNetB0 and DenseNet121 (random weights, calibrated, 32x32
RGB; tests/frameworks/keras_env/zoo.py) are saved and exported by
``amalgam export-teacher keras --nchw`` in .venv-keras (``make fixtures``, run by
``make test`` first; mk/frameworks.mk). Here, with no TensorFlow, each ONNX file is
cut after every candidate block boundary, and each branch, converted to torch, must
give ONNX Runtime's logits back; a boundary must be found at every stage end.
"""

import json
import os
from pathlib import Path

import pytest

from amalgam.toolkit.cli import main

# `make test` builds the zoo into ZOO_FIXTURES (mk/frameworks.mk) and names the folder in
# AMALGAM_ZOO_FIXTURES: there a missing file fails; elsewhere it skips.
GIVEN = os.environ.get("AMALGAM_ZOO_FIXTURES")
ZOO = Path(GIVEN or Path(__file__).resolve().parent.parent / "runs" / "fixtures")
MODELS = ["mobilenetv2", "resnet50", "efficientnetb0", "densenet121"]
STAGE_SIZES = {16, 8, 4, 2, 1}  # spatial size after each stride-2 stage of a 32x32 input


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_boundary_converts_with_parity(name, capsys):
    path = ZOO / f"zoo_keras_{name}.onnx"
    if not path.is_file():
        missing = f"{path} is missing: run `make fixtures` in the repository root (make test builds it first)"
        if GIVEN:
            pytest.fail(missing)
        pytest.skip(missing)
    with pytest.raises(SystemExit) as e:
        main(["inspect", str(path), "--check", "--json"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    blocks = json.loads(out)["blocks"]
    assert blocks and all(b["branch_ok"] for b in blocks)
    assert {b["shape"][-1] for b in blocks} >= STAGE_SIZES
