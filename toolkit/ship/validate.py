"""The parity gate: is the shipped student the network that was trained, and is it
as good as its teachers on the chosen tasks?

Paper terms -> code: the TargetNet "checked against the PyTorch student and
against the teachers before deployment" is two checks here.

* numeric parity (fp32 students): the ONNX student (ONNX Runtime, ``basic``
  optimisation) against the PyTorch student rebuilt from the run dir, and the
  simplified file against the unsimplified ``<name>.raw.onnx`` (run with no
  optimisation, so basic fusions cannot hide a BatchNorm folded wrongly). Per
  output: max / mean / p99 of absolute and relative error (runtime.parity).
* task-level parity: per task, agreement of the student's decisions with its
  teacher's and with the PyTorch student's; with labels, accuracy and F1 of the
  student and of its teacher. The gate fails a task whose student F1 falls more
  than ``max_degradation`` below its teacher's; without labels, one whose
  agreement with the teacher falls more than ``max_degradation`` below the
  PyTorch student's. An int8 student is judged on the task level only.

The teachers must be the files the student was built from: their sha256 are in
the student's metadata (``amalgam.teachers``).
"""

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amalgam.exporters.metadata import read_metadata
from amalgam.runtime.errors import BadInputError, DegradationError, ParityError
from amalgam.runtime.files import write_text_atomic
from amalgam.runtime.graph import dims
from amalgam.runtime.model_io import file_sha256, load_model
from amalgam.runtime.parity import SRTOL, collect, compare, onnx_runner
from amalgam.toolkit.data import source_spec
from amalgam.toolkit.eval.metrics import agreement, task_metrics
from amalgam.toolkit.eval.tables import validation_task_table
from amalgam.toolkit.student.io import INPUT_NAME, open_run, sibling

BATCH = 64
TRAIN_LIMIT = 1024  # rows of the training source used when the config has no eval data


@dataclass
class Validation:
    """What ``amalgam validate`` found; ``passed`` when numeric parity and the task gate pass."""

    student: Path
    precision: str
    data: dict  # {"source", "samples", "labels"}
    numeric: list = field(default_factory=list)  # runtime.parity.ParityReport
    tasks: list = field(default_factory=list)  # report.json task rows
    torch_agreement: dict | None = None  # task -> agreement with the PyTorch student
    max_degradation: float = 0.01
    failures: list = field(default_factory=list)  # task gate failures, one line each
    notes: list = field(default_factory=list)

    @property
    def parity_passed(self):
        return all(r.passed for r in self.numeric)

    @property
    def passed(self):
        return self.parity_passed and not self.failures

    def parity_summary(self):
        """Worst max / p99 absolute error over every numeric comparison, and the verdict."""
        rows = [r.summary() for r in self.numeric]
        return {
            "max_abs": max((r["max_abs"] for r in rows), default=None),
            "p99_abs": max((r["p99_abs"] for r in rows), default=None),
            "passed": self.parity_passed,
        }

    def to_dict(self):
        return {
            "student": str(self.student),
            "precision": self.precision,
            "data": self.data,
            "numeric": [r.to_dict() for r in self.numeric],
            "parity": self.parity_summary(),
            "tasks": self.tasks,
            "agreement_torch": self.torch_agreement,
            "max_degradation": self.max_degradation,
            "failures": self.failures,
            "notes": self.notes,
            "passed": self.passed,
        }

    def to_markdown(self):
        data = self.data
        lines = [
            f"# Student validation: {'PASS' if self.passed else 'FAIL'}",
            "",
            f"- student: `{self.student}` ({self.precision})",
            f"- data: `{data['source']}`, {data['samples']} samples, {'with' if data['labels'] else 'without'} labels",
            "",
            "## Numeric parity",
            "",
        ]
        lines += [r.to_markdown() for r in self.numeric] or ["(none)", ""]
        lines += [
            "## Tasks",
            "",
            validation_task_table(self.tasks, self.torch_agreement),
            "",
            f"## Gate (max degradation {self.max_degradation:g})",
            "",
        ]
        lines += [f"- FAIL: {f}" for f in self.failures] or ["- every task within the allowed degradation"]
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def raise_if_failed(self):
        """ParityError naming the outputs that differ, else DegradationError naming the tasks."""
        if not self.parity_passed:
            parts = [f"{r.title}: " + ", ".join(o.describe() for o in r.failed) for r in self.numeric if not r.passed]
            raise ParityError(
                f"{self.student}: outputs differ beyond tolerance: "
                + "; ".join(parts)
                + (f"; also {len(self.failures)} task(s) degraded" if self.failures else "")
            )
        if self.failures:
            raise DegradationError(f"{self.student}: " + "; ".join(self.failures))
        return self


def _student_meta(model, path):
    meta = read_metadata(model)
    if meta.get("role") != "student" or not meta.get("tasks"):
        raise BadInputError(
            f"{path}: not a student exported by `amalgam export` "
            f"(no amalgam.role = student / amalgam.tasks in its metadata)"
        )
    return meta


def check_run(meta, spec, path, run):
    """The run dir must be the one the student was exported from."""
    names = [t["name"] for t in meta["tasks"]]
    if spec["task_order"] != names or spec["teachers"] != meta.get("teachers"):
        raise BadInputError(
            f"{path} was not exported from run dir {run}: the student has tasks {names} and "
            f"teachers {sorted(meta.get('teachers') or {})}; the run has tasks {spec['task_order']} "
            f"and teachers {sorted(spec['teachers'])}"
        )


def check_teachers(meta, config, path):
    """The config's teacher files must hash to the sha256 stamped in the student."""
    for name, sha in (meta.get("teachers") or {}).items():
        tc = next((t for t in config.teachers if t.name == name), None)
        found = None if tc is None else (file_sha256(tc.onnx) if Path(tc.onnx).is_file() else "missing")
        if found != sha:
            where = "no such teacher in the config" if tc is None else f"{tc.onnx} has sha256 {found[:12]}"
            raise BadInputError(
                f"validating a student against teachers it was not built from: {path} was built "
                f"from teacher {name!r} with sha256 {sha[:12]}, but {where}"
            )
    chosen = {task["name"] for _, task in config.chosen_tasks()}
    missing = [t["name"] for t in meta["tasks"] if t["name"] not in chosen]
    if missing:
        raise BadInputError(
            f"{path}: the config does not choose the student's tasks {missing} (it chooses {sorted(chosen)})"
        )
    reference = config.teacher(config.student.reference).preprocess.model_dump(mode="json")
    if meta.get("preprocess") and meta["preprocess"] != reference:
        raise BadInputError(
            f"{path}: the student expects inputs preprocessed as {meta['preprocess']}, "
            f"the config's reference teacher as {reference}"
        )


def run_rows(runner, inputs, batch_dim):
    """Every output of ``runner`` over ``inputs``; a fixed batch axis gets padded batches, trimmed after."""
    static = isinstance(batch_dim, int) and batch_dim > 0
    batch = batch_dim if static else BATCH
    out = {}
    for start in range(0, len(inputs), batch):
        chunk = np.array(inputs[start : start + batch], dtype=np.float32)
        rows = len(chunk)
        if static and rows < batch:
            chunk = chunk[np.arange(batch) % rows]
        for name, value in collect(runner, [chunk]).items():
            out.setdefault(name, []).append(value[:rows])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _task_row(task, teacher, student_logits, teacher_logits, labels, thresholds=(0.0, 0.0)):
    """A report.json task row; accuracy and F1 stay None without labels. ``thresholds``: the
    student's and the teacher's decision thresholds (stamped by the run's threshold rule)."""
    row = {
        "name": task["name"],
        "teacher": {"name": teacher, "accuracy": None, "f1": None},
        "kind": task["kind"],
        "student": {"accuracy": None, "f1": None, "agreement": agreement(task["kind"], student_logits, teacher_logits)},
    }
    if labels is not None:
        for who, logits, threshold in zip(("student", "teacher"), (student_logits, teacher_logits), thresholds):
            m = task_metrics(task["kind"], logits, labels, threshold)
            row[who].update(accuracy=m["accuracy"], f1=m["f1"])
    return row


def gate(rows, torch_vs_teacher, max_degradation):
    """One line per task that falls more than ``max_degradation`` below its reference:
    its teacher's F1 with labels, else the PyTorch student's agreement with the teacher."""
    failures = []
    for r in rows:
        s, t = r["student"], r["teacher"]
        if t["f1"] is not None:
            if s["f1"] < t["f1"] - max_degradation:
                failures.append(
                    f"task {r['name']!r}: student F1 {s['f1']:.4f} is {t['f1'] - s['f1']:.4f} below "
                    f"its teacher's {t['f1']:.4f} (allowed: {max_degradation:g})"
                )
        elif torch_vs_teacher is not None:
            ref = torch_vs_teacher[r["name"]]
            if s["agreement"] < ref - max_degradation:
                failures.append(
                    f"task {r['name']!r}: agreement with the teacher {s['agreement']:.4f} is "
                    f"{ref - s['agreement']:.4f} below the PyTorch student's {ref:.4f} "
                    f"(allowed: {max_degradation:g})"
                )
    return failures


def _numeric(path, meta, net, onnx_out, inputs, batch_dim, tolerance, tolerances, notes):
    """Parity reports: ONNX vs PyTorch student, simplified vs unsimplified; and the torch outputs."""
    reports, torch_out = [], None
    if net is not None:
        from amalgam.runtime.torch_runner import torch_runner

        runner = torch_runner(net, [INPUT_NAME], [t["name"] for t in meta["tasks"]])
        torch_out = run_rows(runner, inputs, batch_dim)
    if meta.get("precision") == "int8":
        notes.append("int8 student: judged on the task level only (no numeric parity)")
        speed = meta.get("int8_speed") or {}
        if speed.get("slower"):
            notes.append(
                f"int8 student: slower than fp32 where it was exported ({speed['int8_b64_ms']:.2f} ms vs "
                f"{speed['fp32_b64_ms']:.2f} ms at batch 64; CPU int8 support: "
                f"{', '.join(speed['cpu_int8']) or 'none'})"
            )
        return reports, torch_out
    if torch_out is not None:
        reports.append(
            compare(torch_out, onnx_out, *tolerance[:2], tolerances, "ONNX student vs PyTorch student", tolerance[2])
        )
    else:
        notes.append("no PyTorch student (give --run RUN_DIR) for numeric parity")
    raw = sibling(path, "raw")
    if raw.is_file():
        raw_out = run_rows(onnx_runner(raw, opt_level="none"), inputs, batch_dim)
        reports.append(
            compare(raw_out, onnx_out, *tolerance[:2], tolerances, "simplified vs unsimplified", tolerance[2])
        )
    return reports, torch_out


def _eval_source(config, data):
    if data:
        return source_spec(data, split="test"), str(data)
    if config.data.eval is not None:
        return config.data.eval, str(config.data.eval.path)
    spec = {**config.data.train.model_dump(), "limit": TRAIN_LIMIT}
    return spec, f"{config.data.train.path} (first {TRAIN_LIMIT} training images: the config has no eval data)"


def _batch_dim(model, path):
    """The fixed batch size of the student's input, or None when the batch axis is dynamic."""
    found = [i for i in model.graph.input if i.name == INPUT_NAME]
    if not found:
        raise BadInputError(
            f"{path}: the student has no input {INPUT_NAME!r} (inputs: {[i.name for i in model.graph.input]})"
        )
    return (dims(found[0]) or [None])[0]


def _teacher_split(config, data, run, cache_dir):
    """The evaluation inputs, the teachers' logits on them, and labels where known."""
    from amalgam.toolkit.teachers import load_teachers, split_data

    source, label = _eval_source(config, data)
    with contextlib.ExitStack() as stack:
        cache = cache_dir or (
            Path(run).parent / ".cache" if run else stack.enter_context(tempfile.TemporaryDirectory())
        )
        return split_data(config, load_teachers(config), source, cache, progress=False, tap_rows=None), label


def _judge_tasks(result, meta, onnx_out, torch_out, split):
    """Task rows, agreement with the PyTorch student, and the task gate, into ``result``."""
    teachers = meta.get("task_teachers") or {}
    logits = {t["name"]: np.asarray(split.logits[t["name"]]) for t in meta["tasks"]}
    own, theirs = meta.get("thresholds") or {}, meta.get("teacher_thresholds") or {}
    result.tasks = [
        _task_row(
            t,
            teachers.get(t["name"]),
            onnx_out[t["name"]],
            logits[t["name"]],
            split.labels.get(t["name"]),
            (own.get(t["name"], 0.0), theirs.get(t["name"], 0.0)),
        )
        for t in meta["tasks"]
    ]
    torch_vs_teacher = None
    if torch_out is not None:
        result.torch_agreement = {
            t["name"]: agreement(t["kind"], onnx_out[t["name"]], torch_out[t["name"]]) for t in meta["tasks"]
        }
        torch_vs_teacher = {
            t["name"]: agreement(t["kind"], torch_out[t["name"]], logits[t["name"]]) for t in meta["tasks"]
        }
    result.failures = gate(result.tasks, torch_vs_teacher, result.max_degradation)
    if not split.labels and torch_out is None:
        result.notes.append("no task-level gate: no labels and no PyTorch student")


def validate_student(
    student,
    run=None,
    config=None,
    data=None,
    atol=1e-4,
    rtol=1e-3,
    tolerances=None,
    max_degradation=0.01,
    cache_dir=None,
    srtol=SRTOL,
):
    """Validate ``student`` (an ONNX file from ``amalgam export``); returns :class:`Validation`.

    ``config`` defaults to ``RUN/config.json``; the teachers and the evaluation data
    (its ``data.eval``, or ``data``) come from it.
    """
    from amalgam.toolkit.config import load_config

    path = Path(student)
    model = load_model(path)
    meta = _student_meta(model, path)
    names = [t["name"] for t in meta["tasks"]]
    unknown = sorted(set(tolerances or {}) - set(names))
    if unknown:
        raise BadInputError(f"--tolerance given for {unknown}, but the student's outputs are {names}")
    net = None
    if run is not None:
        net, spec = open_run(run)
        check_run(meta, spec, path, run)
    if config is None and run is None:
        raise BadInputError("validate needs the teachers and data: give --run RUN_DIR or --config CONFIG")
    config = load_config(config or Path(run) / "config.json")
    check_teachers(meta, config, path)
    split, label = _teacher_split(config, data, run, cache_dir)
    batch_dim = _batch_dim(model, path)
    onnx_out = run_rows(onnx_runner(path, opt_level="basic"), split.inputs, batch_dim)
    result = Validation(
        path,
        meta.get("precision", "fp32"),
        {"source": label, "samples": len(split), "labels": bool(split.labels)},
        max_degradation=max_degradation,
    )
    result.numeric, torch_out = _numeric(
        path, meta, net, onnx_out, split.inputs, batch_dim, (atol, rtol, srtol), tolerances, result.notes
    )
    _judge_tasks(result, meta, onnx_out, torch_out, split)
    return result


def write_reports(validation, report=None):
    """``report`` (default ``<student>.validation.json``) and the Markdown next to it."""
    json_path = Path(report) if report else sibling(validation.student, "validation").with_suffix(".json")
    write_text_atomic(json_path, json.dumps(validation.to_dict(), indent=2))
    md_path = write_text_atomic(json_path.with_suffix(".md"), validation.to_markdown())
    return json_path, md_path
