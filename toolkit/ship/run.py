"""The shipping half of ``amalgam run``: a trained run dir's student exported to
``student.onnx``, validated against the PyTorch student and its teachers, measured
(params, file size, CPU latency, next to the teachers'), and reported.

Writes into the run dir: ``student.onnx`` (and ``student.raw.onnx``),
``validation.json``, ``report.json`` (schema: docs/report.md), ``report.md`` and
``plots/report_tasks.png``, each atomically.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from amalgam.runtime.files import write_json_atomic, write_text_atomic
from amalgam.toolkit.config import Config
from amalgam.toolkit.data import input_shape
from amalgam.toolkit.eval.plots import plot_task_bars
from amalgam.toolkit.eval.tables import (
    footprint_table,
    margin_table,
    validation_task_table,
    what_the_run_did,
    worst_lines,
)
from amalgam.toolkit.ship.export import Exported, export_student
from amalgam.toolkit.ship.latency import footprint, total
from amalgam.toolkit.ship.report import run_markdown, run_report
from amalgam.toolkit.ship.validate import Validation, validate_student


@dataclass
class Shipped:
    """What shipping a run dir gave: the files, the validation and report.json's content."""

    exported: Exported
    validation: Validation
    report: dict
    report_path: Path
    metrics: dict  # the run's metrics.json: each task's margins and what the run did about them

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    def summary(self) -> str:
        """The task table, the footprint table and the verdict, as `amalgam run` prints them."""
        parity = self.report["parity"]
        return "\n".join(
            [
                validation_task_table(self.validation.tasks, self.validation.torch_agreement),
                "",
                footprint_table(self.report),
                "",
                *worst_lines(self.metrics["summary"], ["student"]),
                *what_the_run_did(self.metrics),
                f"numeric parity: max abs {parity['max_abs']:.3g}, p99 abs {parity['p99_abs']:.3g}; "
                f"{'PASS' if self.passed else 'FAIL'}; report: {self.report_path}",
            ]
        )


def teacher_footprints(config: Config) -> list[dict]:
    """Footprints of the teachers serving a chosen task (config order), each timed alone."""
    owners = {teacher for teacher, _ in config.chosen_tasks()}
    return [footprint(tc.onnx, input_shape(tc.preprocess)[1:], tc.input) for tc in config.teachers if tc.name in owners]


def plot_tasks(report: dict, path: Path) -> Path:
    """Per-task bars, teacher vs student: F1 with labels, else agreement with the teacher."""
    key = "f1" if any(t["student"]["f1"] is not None for t in report["tasks"]) else "agreement"
    rows = [{"task": t["name"], "teacher": t["teacher"], "student": t["student"]} for t in report["tasks"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_task_bars(rows, path, key)
    return path


def ship_run(config: Config, out, max_degradation=0.01, cache_dir=None) -> Shipped:
    """Export, validate, measure and report the trained student of run dir ``out``."""
    out = Path(out)
    exported = export_student(out, out / "student.onnx")
    validation = validate_student(exported.student, run=out, max_degradation=max_degradation, cache_dir=cache_dir)
    write_json_atomic(out / "validation.json", validation.to_dict())
    spec = json.loads((out / "student" / "spec.json").read_text())
    student = footprint(exported.student, input_shape(spec["preprocess"], 1)[1:])
    report = run_report(validation, student, total(teacher_footprints(config)))
    write_json_atomic(out / "report.json", report)
    metrics = json.loads((out / "metrics.json").read_text())
    margins = "## Each chosen task against its own teacher\n\n" + margin_table(metrics)
    write_text_atomic(out / "report.md", run_markdown(report, validation) + "\n\n" + margins + "\n")
    plot_tasks(report, out / "plots" / "report_tasks.png")
    return Shipped(exported, validation, report, out / "report.json", metrics)
