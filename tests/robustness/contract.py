"""The bad-input contract every robustness test checks (docs/robustness.md): exit
code 2, one ``error:`` message naming the file, field or tensor, no traceback, and
nothing half-written left behind; plus a valid config to break one field at a time.
"""

import copy
from pathlib import Path

import pytest
import yaml

from amalgam.toolkit.cli import main
from tests.synthetic import SIZE

PARTIAL_MARKERS = (".tmp", ".stale-", ".partial")


def base_config(assets, **top):
    """A valid config (two teachers, five tasks each) as a dict; ``top`` replaces keys."""
    prep = {"size": [SIZE, SIZE], "channels": 1}
    config = {
        "teachers": [
            {
                "name": "A",
                "onnx": str(assets / "a.onnx"),
                "preprocess": prep,
                "tasks": [{"name": f"a{i}", "output": "logits", "index": i} for i in range(5)],
            },
            {
                "name": "B",
                "onnx": str(assets / "b.onnx"),
                "preprocess": copy.deepcopy(prep),
                "tasks": [{"name": f"b{i}", "output": "logits", "index": i} for i in range(5)],
            },
        ],
        "tasks": ["a0", "a1", "b2"],
        "data": {"train": {"format": "numpy", "path": str(assets / "train.npz")}, "holdout": 0.25},
        "training": {"epochs_per_block": 0, "finetune_epochs": 0, "batch_size": 32},
        "baseline": {"kd": False},
    }
    config.update(top)
    return config


def write_config(folder, config, name="config.yaml"):
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(config))
    return path


class CliResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"CliResult(code={self.code!r}, err={self.err[-2000:]!r})"


def assert_bad_input(result, *fragments):
    """Exit 2, one ``error:`` message holding every fragment, no traceback."""
    assert result.code == 2, result
    assert result.err.startswith("error: "), result
    assert "Traceback" not in result.err, result
    for fragment in fragments:
        assert fragment in result.err, (fragment, result)


def partial_files(root):
    """Temp or half-written files and folders under ``root`` (none when it is absent)."""
    root = Path(root)
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if any(m in p.name for m in PARTIAL_MARKERS)]


def assert_no_partial_files(*roots):
    for root in roots:
        left = partial_files(root)
        assert not left, f"half-written output left behind: {left}"


def run_cli(capsys, *args):
    """``amalgam ARGS`` in-process: a CliResult with exit code, stdout and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return CliResult(e.value.code, out, err)
