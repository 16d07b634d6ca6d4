"""No framework noise on the terminal: the user sees our lines only (the CLI run as a
user runs it, in its own process, so that file-descriptor output is seen too)."""

import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amalgam.runtime.quiet import framework_output

NOISE = ("Traceback", "TracerWarning", "[E:onnxruntime", "torch.onnx", "def forward", "UserWarning")

FACTORIES = textwrap.dedent('''
    import torch

    class AlwaysPositive(torch.nn.Module):
        """A data-dependent branch: torch.export refuses it, the legacy tracer warns about it."""

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            if x.abs().sum() >= 0:
                return self.fc(x)
            return -self.fc(x)

    class RowSwitch(torch.nn.Module):
        """The branch follows the first row: the traced graph is wrong for other inputs."""

        def forward(self, x):
            if x[0].sum() > 2:
                return x * 2
            return -x

    def always_positive():
        return AlwaysPositive()

    def row_switch():
        torch.manual_seed(0)  # the CLI's sample is then [[.50, .77, .09, .13], [.31, .63, .49, .90]]: rows
        return RowSwitch()    # summing to 1.49 (traced: -x) and 2.33 (x * 2), which the check meets alone
''')


def amalgam(cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "amalgam", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_legacy_fallback_export_prints_only_our_line(tmp_path):
    (tmp_path / "noisy.py").write_text(FACTORIES)
    done = amalgam(
        tmp_path, "export-teacher", "torch", "noisy:always_positive", "--input-shape", "2,4", "-o", tmp_path / "t.onnx"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [f"wrote {tmp_path / 't.onnx'}"]


def test_failed_export_check_is_one_error_line(tmp_path):
    (tmp_path / "noisy.py").write_text(FACTORIES)
    done = amalgam(
        tmp_path, "export-teacher", "torch", "noisy:row_switch", "--input-shape", "2,4", "-o", tmp_path / "t.onnx"
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not any(n in done.stderr for n in NOISE)
    assert done.stdout == "" and not (tmp_path / "t.onnx").exists()


def _fixed_batch_model(path):
    """A legacy-traced shape: the flatten's target keeps the batch of 1 it was traced at."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])
    inits = [
        numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.ones((32, 3), np.float32), "W"),
        numpy_helper.from_array(np.array([1, 32], np.int64), "target"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("Reshape", ["act", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "fixed_batch", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_runtime_failure_is_one_error_line(tmp_path):
    path = _fixed_batch_model(tmp_path / "fixed.onnx")
    done = amalgam(tmp_path, "inspect", path, "--check")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ONNX Runtime cannot run it"), done.stderr
    assert not any(n in done.stderr for n in NOISE)


def test_framework_output_goes_to_the_log(tmp_path, capfd):
    import os
    import warnings

    log = tmp_path / "export.log"
    with framework_output("noisy step", log):
        print("progress on stdout")
        os.write(2, b"C++ line on fd 2\n")
        warnings.warn("a TracerWarning-like warning", stacklevel=1)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    text = log.read_text()
    assert text.startswith("=== noisy step") and "progress on stdout" in text
    assert "C++ line on fd 2" in text and "a TracerWarning-like warning" in text
