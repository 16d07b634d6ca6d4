"""From a run dir to the deployable student: export -> simplify -> stamp -> optional int8.

Paper terms -> code: the trained TargetNet (``RUN_DIR/student``, rebuilt by
:func:`~amalgam.toolkit.student.io.load_student`) becomes one ONNX file whose outputs are
the chosen tasks' logits, named after the tasks, in the run's task order; its
input is ``"input"``, preprocessed as ``metadata amalgam.preprocess`` says.

Files written for ``-o student.onnx`` (each to a temporary name, then renamed):

* ``student.onnx``: what ships (simplified by onnxsim and folded exactly, exporters.fold, unless ``simplify=False``;
  int8 when ``quantize="int8"``);
* ``student.raw.onnx``: the unsimplified export, kept when simplifying, so that
  ``amalgam validate`` can compare the simplified graph with it;
* ``student.fp32.onnx``: the fp32 model the int8 one was calibrated from (int8 only);
* ``RUN_DIR/export.log``: what torch printed while exporting (appended).
"""

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from amalgam.exporters.student import (
    cpu_int8_support,
    fold,
    quantize_int8,
    record,
    save_atomic,
    simplify,
    stamp_student,
)
from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.errors import BadInputError
from amalgam.toolkit.data import Preprocess, input_shape, open_source, source_spec
from amalgam.toolkit.student.io import INPUT_NAME, open_run, sibling

EXPORT_BATCH = 2  # the dynamo exporter specialises a batch of 1
EXPORT_LOG = "export.log"  # in the run dir: what torch printed while exporting
CALIBRATION_BATCH = 32
CALIBRATION_SAMPLES = 512


@dataclass
class Exported:
    """Paths of one export: the shipped file, the unsimplified one, the fp32 one (int8 only)."""

    student: Path
    raw: Path | None = None
    fp32: Path | None = None
    int8_speed: dict | None = None  # int8 only: see int8_speed()


def student_tasks(spec):
    """Task specs pointing at the student's outputs: one output per task, named after it."""
    out = []
    for name in spec["task_order"]:
        task = spec["tasks"][name]
        out.append(
            {
                "name": name,
                "output": name,
                "index": None,
                "slice": None,
                "kind": task["kind"],
                "labels": task.get("labels"),
            }
        )
    return out


def student_thresholds(spec):
    """Decision thresholds on the logits of every binary task: those the run set on its held-out
    split (``evaluation.threshold``), else 0.0 (probability 0.5)."""
    found = spec.get("thresholds") or {}
    return {name: float(found.get(name, 0.0)) for name in spec["task_order"] if spec["tasks"][name]["kind"] == "binary"}


def calibration_batches(text, preprocess, limit=CALIBRATION_SAMPLES):
    """Unlabeled inputs for int8 calibration, preprocessed exactly like the student's input."""
    prep = Preprocess(**preprocess)
    spec = {**source_spec(text), "limit": limit}
    source = open_source(spec, prep.size, prep.channels)
    return [prep(images) for _, images in source.batches(CALIBRATION_BATCH)]


def _quiet_simplify(raw, out, static_batch):
    """onnxsim prints "Checking i/n..." on stdout: keep it out of the command's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        return simplify(raw, out, static_batch=static_batch)


def _export_raw(net, spec, path, opset, static_batch, log_path):
    """TargetNet -> ONNX (checked against torch by export_torch), stamped as the student.

    Dynamo only: the student's converted pieces export under torch.export, so a
    legacy fallback would only hide a regression.
    """
    batch = static_batch or EXPORT_BATCH
    sample = torch.rand(*input_shape(spec["preprocess"], batch))
    export_torch(
        net,
        sample,
        path,
        input_names=[INPUT_NAME],
        output_names=list(spec["task_order"]),
        opset=opset,
        dynamic_batch=static_batch is None,
        fallback=False,
        log_path=log_path,
    )
    model = onnx.load(str(path))
    task_teachers = {name: spec["tasks"][name]["teacher"] for name in spec["task_order"]}
    stamp_student(
        model,
        student_tasks(spec),
        thresholds=student_thresholds(spec),
        preprocess=spec["preprocess"],
        teacher_hashes=spec["teachers"],
        task_teachers=task_teachers,
        export={"opset": opset, "static_batch": static_batch},
        teacher_thresholds=spec.get("teacher_thresholds") or {},
    )
    return save_atomic(model, path)


def export_student(run_dir, out, opset=18, static_batch=None, simplified=True, quantize=None, calib_data=None):
    """Export the student of ``run_dir`` to ``out``; returns :class:`Exported`.

    ``static_batch``: fix the batch axis (default: dynamic). ``quantize="int8"``
    needs ``calib_data`` (a data source, see :func:`~amalgam.toolkit.data.source_spec`).
    """
    if quantize not in (None, "int8"):
        raise BadInputError(f"--quantize {quantize!r}: expected 'int8'")
    if quantize and not calib_data:
        raise BadInputError(
            "--quantize int8 needs calibration data: give --calib-data SRC "
            "(unlabeled images like those the student will see, e.g. numpy:train.npz)"
        )
    if static_batch is not None and static_batch < 1:
        raise BadInputError(f"--static-batch {static_batch}: expected an integer >= 1")
    net, spec = open_run(run_dir)
    calibration = calibration_batches(calib_data, spec["preprocess"]) if quantize else None
    out = Path(out)
    raw = _export_raw(net, spec, sibling(out, "raw"), opset, static_batch, Path(run_dir) / EXPORT_LOG)
    fp32 = sibling(out, "fp32") if quantize else out
    if simplified:
        fold(_quiet_simplify(raw, fp32, None), fp32)  # checked against raw by the parity gate
    else:
        os.replace(raw, fp32)
        raw = None
    if not quantize:
        return Exported(out, raw)
    quantize_int8(fp32, out, calibration)
    return Exported(out, raw, fp32, int8_speed(fp32, out, spec["preprocess"]))


def int8_speed(fp32, int8, preprocess):
    """fp32 vs int8 ONNX Runtime latency at batch 64 on this CPU and its int8 instructions,
    recorded in the int8 file as ``amalgam.int8_speed``: int8 that runs slower is said so."""
    from amalgam.toolkit.ship.latency import latency_ms

    shape = input_shape(preprocess, 1)[1:]
    speed = {
        "fp32_b64_ms": latency_ms(fp32, shape, 64),
        "int8_b64_ms": latency_ms(int8, shape, 64),
        "cpu_int8": cpu_int8_support(),
    }
    speed["slower"] = speed["int8_b64_ms"] > speed["fp32_b64_ms"]
    record(int8, int8_speed=speed)
    return speed
