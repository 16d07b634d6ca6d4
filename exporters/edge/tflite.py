"""The student as TFLite, converted by onnx2tf from its ONNX file in the converter's own
environment (``.venv-edge``: TensorFlow and onnx2tf pin numpy, onnx and onnxruntime
versions that clash with the main environment's torch), run as a subprocess.

The main environment only drives the job (``onnx2tf_job.py``) and reads back what it
wrote: float32 TFLite and two int8 ones, full-integer (int8 input and outputs) and
integer-only inside with float32 input and outputs, both per-channel and calibrated on
the rows given. Their runner is ``runtime.runners.litert_runner`` (ai-edge-litert is
in the main environment too). ``AMALGAM_EDGE_PYTHON`` points at another interpreter
with onnx2tf; by default it is ``.venv-edge/bin/python`` of the source checkout.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import BadInputError, ExportError

JOB = Path(__file__).with_name("onnx2tf_job.py")
ROOT = Path(__file__).resolve().parents[2]  # the source checkout (editable install)
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}


class ConverterMissingError(BadInputError):
    """The converter's environment is not there."""


def edge_python():
    """The interpreter that has onnx2tf: ``AMALGAM_EDGE_PYTHON``, else ``.venv-edge/bin/python``."""
    given = os.environ.get("AMALGAM_EDGE_PYTHON")
    path = Path(given) if given else ROOT / ".venv-edge" / "bin" / "python"
    if not path.is_file():
        raise ConverterMissingError(
            f"target tflite needs onnx2tf in its own environment: {path} is missing "
            f"(make edge-env builds .venv-edge from requirements/edge.txt; or set AMALGAM_EDGE_PYTHON)"
        )
    return path


def _reason(log_text):
    """The converter's last error line (onnx2tf ends a failure with its error), for one error line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def to_tflite(onnx_path, out_dir, rows, log_path):
    """Convert ``onnx_path`` into ``out_dir``; ``rows``: NCHW float32 calibration rows.

    Returns the job's result (``files`` by kind, ``signatures``, ``versions``); the
    converter's output is appended to ``log_path``. ``ExportError`` names the
    converter's last error line when it fails.
    """
    python = edge_python()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="amalgam-tflite-") as tmp:
        calib, result = Path(tmp, "calib.npy"), Path(tmp, "result.json")
        np.save(calib, np.ascontiguousarray(np.asarray(rows, np.float32).transpose(0, 2, 3, 1)))
        done = subprocess.run(
            [str(python), str(JOB), str(onnx_path), str(Path(tmp, "out")), str(calib), str(result)],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
        )
        with open(log_path, "a") as log:
            log.write(f"== onnx2tf {onnx_path}\n{done.stdout}\n{done.stderr}\n")
        if done.returncode != 0 or not result.is_file():
            raise ExportError(f"{onnx_path}: onnx2tf cannot convert it: {_reason(done.stdout + done.stderr)}")
        found = json.loads(result.read_text())
        for kind, path in found["files"].items():
            dest = out_dir / f"{Path(onnx_path).stem}_{kind}.tflite"
            os.replace(path, dest)
            found["files"][kind] = str(dest)
    return found
