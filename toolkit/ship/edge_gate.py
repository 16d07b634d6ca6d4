"""``amalgam validate DIR``: every artifact of ``amalgam export --target`` gated in one run.

Paper terms -> code: the TargetNet "checked against the PyTorch student and against
the teachers before deployment", once per artifact, each on its own runtime
(``runtime.runners``), with the one comparator (``runtime.parity.compare``) and the
one task gate (``toolkit.ship.validate.gate``):

* numeric parity against the PyTorch student over the evaluation data, with the
  rule of the artifact's precision (:data:`TOLERANCE`: element-wise atol + rtol for
  fp32 and fp16, each output's SQNR for int8); fp16 and int8 also need the worst
  task's decision agreement with the PyTorch student to reach :data:`AGREEMENT`
  (docs/edge.md has the measurements behind both);
* per task, F1 against the teacher's (without labels: agreement with the teacher
  against the PyTorch student's), failing a task more than ``max_degradation`` below;
* latency at batch 1 and 64 on this CPU (``toolkit.ship.latency``).

An artifact that its runtime cannot load or run fails the gate too (exit 1, named).
Each artifact's results go into ``DIR/targets.json`` (``results``); ``DIR/validation.json``
and ``DIR/report.md`` (one table: artifact x bytes x latency x parity x worst-task
margin) are written beside it.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import BadInputError, DegradationError, ModelFileError, ParityError
from amalgam.runtime.files import write_json_atomic, write_text_atomic
from amalgam.runtime.model_io import file_sha256
from amalgam.runtime.parity import ATOL, RTOL, compare
from amalgam.runtime.runners import open_runner
from amalgam.toolkit.eval.metrics import agreement
from amalgam.toolkit.eval.tables import markdown
from amalgam.toolkit.ship import int8
from amalgam.toolkit.ship.edge import RUNTIME
from amalgam.toolkit.ship.export import student_tasks, student_thresholds
from amalgam.toolkit.ship.latency import BATCHES, runner_latency_ms
from amalgam.toolkit.ship.validate import _task_row, _teacher_split, check_teachers, gate, run_rows
from amalgam.toolkit.student.io import INPUT_NAME, open_run

# runtime.parity.compare's rule per precision: fp32 is every parity check's default; fp16 and
# int8 from the measurements in docs/edge.md (both samples' worst artifact with a margin); export
# keeps no int8 variant outside its bound (toolkit.ship.int8).
TOLERANCE = {"fp32": {"atol": ATOL, "rtol": RTOL}, "fp16": {"atol": 5e-2, "rtol": 2e-2}, "int8": int8.PARITY}
AGREEMENT = {"fp32": None, "fp16": 0.995, "int8": 0.97}  # worst task's decision agreement with PyTorch


@dataclass
class ArtifactCheck:
    """One artifact's verdict: parity, decisions, tasks, latency."""

    entry: dict
    parity: object = None  # runtime.parity.ParityReport
    agreement: dict = field(default_factory=dict)  # task -> decision agreement with the PyTorch student
    tasks: list = field(default_factory=list)  # report.json task rows
    latency_ms: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def name(self):
        return self.entry["name"]

    @property
    def parity_passed(self):
        return self.parity is not None and self.parity.passed

    @property
    def passed(self):
        return self.parity_passed and not self.failures

    def margin(self):
        """Worst task's student minus teacher F1 (agreement with the teacher minus the PyTorch
        student's, without labels); None when nothing was judged."""
        values = [r["margin"] for r in self.tasks if r.get("margin") is not None]
        return min(values) if values else None

    def results(self):
        p = self.parity
        return {
            "passed": self.passed,
            "parity": None
            if p is None
            else {**{k: v for k, v in p.to_dict().items() if k not in ("title", "outputs")}, **_tolerance(self.entry)},
            "agreement_torch": self.agreement,
            "worst_agreement": min(self.agreement.values()) if self.agreement else None,
            "worst_task_margin": self.margin(),
            "latency_ms": self.latency_ms,
            "tasks": self.tasks,
            "failures": self.failures,
            "notes": self.notes,
        }


def _tolerance(entry):
    return TOLERANCE[entry["precision"]]


def read_targets(folder):
    path = Path(folder) / "targets.json"
    if not path.is_file():
        raise BadInputError(
            f"{folder}: no targets.json (write the folder with `amalgam export RUN_DIR --target T -o DIR`)"
        )
    found = json.loads(path.read_text())
    for entry in found.get("artifacts", []):
        if entry.get("runtime") not in set(RUNTIME.values()) or entry.get("precision") not in TOLERANCE:
            raise BadInputError(
                f"{path}: artifact {entry.get('name')!r} has runtime {entry.get('runtime')!r} / precision "
                f"{entry.get('precision')!r}; expected one of {sorted(set(RUNTIME.values()))} / {sorted(TOLERANCE)}"
            )
    return found


def student_meta(spec):
    """What the exported ONNX student's metadata says, from the run's spec (the gate's input)."""
    return {
        "tasks": student_tasks(spec),
        "teachers": spec["teachers"],
        "preprocess": spec["preprocess"],
        "thresholds": student_thresholds(spec),
        "teacher_thresholds": spec.get("teacher_thresholds") or {},
        "task_teachers": {name: spec["tasks"][name]["teacher"] for name in spec["task_order"]},
    }


class Evaluation:
    """The evaluation rows, the teachers' logits on them and the PyTorch student's outputs."""

    def __init__(self, run, config, data, cache_dir):
        from amalgam.runtime.torch_runner import torch_runner
        from amalgam.toolkit.config import load_config

        net, self.spec = open_run(run)
        self.meta = student_meta(self.spec)
        self.config = load_config(config or Path(run) / "config.json")
        self.split, self.label = _teacher_split(self.config, data, run, cache_dir)
        names = list(self.spec["task_order"])
        self.torch = run_rows(torch_runner(net, [INPUT_NAME], names), self.split.inputs, None)
        self.logits = {t["name"]: np.asarray(self.split.logits[t["name"]]) for t in self.meta["tasks"]}
        self.torch_vs_teacher = {
            t["name"]: agreement(t["kind"], self.torch[t["name"]], self.logits[t["name"]]) for t in self.meta["tasks"]
        }


def _runner(folder, entry, opt_level):
    return open_runner(
        entry["runtime"],
        Path(folder) / entry["file"],
        entry.get("signature_outputs", entry["outputs"]),
        entry["input"]["layout"],
        opt_level=opt_level,
    )


def _fixed_batch(entry):
    return entry["input"]["shape"][0] if entry["input"]["batch"] == "fixed" else None


def check_artifact(folder, entry, ev, max_degradation):
    """Run one artifact over the evaluation rows and judge it (an ArtifactCheck)."""
    check = ArtifactCheck(entry)
    path = Path(folder) / entry["file"]
    if file_sha256(path) != entry["sha256"]:
        check.notes.append(
            f"{entry['file']} changed since export (sha256 {file_sha256(path)[:12]}, exported {entry['sha256'][:12]})"
        )
    try:
        out = run_rows(_runner(folder, entry, "basic"), ev.split.inputs, _fixed_batch(entry))
    except ModelFileError as e:
        check.failures.append(f"cannot run on {entry['runtime']}: {e}")
        return check
    check.parity = compare(ev.torch, out, title=f"{entry['name']} vs PyTorch student", **_tolerance(entry))
    kinds = {t["name"]: t["kind"] for t in ev.meta["tasks"]}
    check.agreement = {name: agreement(kind, out[name], ev.torch[name]) for name, kind in kinds.items()}
    bound = AGREEMENT[entry["precision"]]
    for name, value in check.agreement.items():
        if bound is not None and value < bound:
            check.failures.append(
                f"task {name!r}: decisions agree with the PyTorch student's on {value:.4f} of rows (bound {bound})"
            )
    _judge_tasks(check, ev, out, max_degradation)
    runner = _runner(folder, entry, "full")
    shape = tuple(ev.split.inputs.shape[1:])
    check.latency_ms = {f"b{b}": runner_latency_ms(runner, shape, b, _fixed_batch(entry)) for b in BATCHES}
    return check


def _judge_tasks(check, ev, out, max_degradation):
    own, theirs = ev.meta["thresholds"], ev.meta["teacher_thresholds"]
    teachers = ev.meta["task_teachers"]
    for t in ev.meta["tasks"]:
        name = t["name"]
        row = _task_row(
            t,
            teachers.get(name),
            out[name],
            ev.logits[name],
            ev.split.labels.get(name),
            (own.get(name, 0.0), theirs.get(name, 0.0)),
        )
        s, tt = row["student"], row["teacher"]
        row["margin"] = s["f1"] - tt["f1"] if tt["f1"] is not None else s["agreement"] - ev.torch_vs_teacher[name]
        check.tasks.append(row)
    check.failures += gate(check.tasks, ev.torch_vs_teacher, max_degradation)


@dataclass
class TargetsValidation:
    folder: Path
    data: dict
    checks: list
    skipped: list
    max_degradation: float

    @property
    def passed(self):
        return all(c.passed for c in self.checks)

    def to_dict(self):
        return {
            "folder": str(self.folder),
            "data": self.data,
            "max_degradation": self.max_degradation,
            "tolerance": {k: {**rule, "worst_task_agreement": AGREEMENT[k]} for k, rule in TOLERANCE.items()},
            "artifacts": {c.name: c.results() for c in self.checks},
            "skipped": self.skipped,
            "passed": self.passed,
        }

    def table(self):
        """Markdown: artifact x bytes x latency x parity x worst-task margin."""
        rows = []
        for c in self.checks:
            e, lat, p = c.entry, c.latency_ms, c.parity
            rows.append(
                [
                    e["name"],
                    e["runtime"],
                    e["precision"],
                    f"{e['bytes'] / 1024:.1f}",
                    _ms(lat.get("b1")),
                    _ms(lat.get("b64")),
                    "-" if p is None else f"{_parity_cell(p)} {'pass' if p.passed else 'FAIL'}",
                    "-" if not c.agreement else f"{min(c.agreement.values()):.4f}",
                    "-" if c.margin() is None else f"{c.margin() * 100:+.2f} pt",
                    "PASS" if c.passed else "FAIL",
                ]
            )
        rows += [[s["target"], "-", "-", "-", "-", "-", "-", "-", "-", "not shipped"] for s in self.skipped]
        header = [
            "artifact",
            "runtime",
            "precision",
            "KiB",
            "ms b1",
            "ms b64",
            "parity (max abs; int8: SQNR)",
            "agree PyTorch",
            "worst-task margin",
            "result",
        ]
        return markdown(header, rows)

    def to_markdown(self):
        lines = [
            f"# Edge targets: {'PASS' if self.passed else 'FAIL'}",
            "",
            f"- data: `{self.data['source']}`, {self.data['samples']} samples, {'with' if self.data['labels'] else 'without'} labels",
            f"- gate: parity against the PyTorch student per precision ({_tolerance_line()}); "
            f"every task within {self.max_degradation:g} of its teacher",
            "",
            self.table(),
            "",
        ]
        lines += [f"- FAIL {c.name}: {f}" for c in self.checks for f in self.failure_lines(c)]
        lines += [f"- not shipped, {s['target']}: {s['reason']}" for s in self.skipped]
        lines += [f"- note, {c.name}: {n}" for c in self.checks for n in c.notes]
        return "\n".join(lines) + "\n"

    @staticmethod
    def failure_lines(check):
        lines = []
        if check.parity is not None and not check.parity.passed:
            lines.append("parity: " + ", ".join(o.describe() for o in check.parity.failed))
        return lines + check.failures

    def raise_if_failed(self):
        failing = [c for c in self.checks if not c.passed]
        if not failing:
            return self
        text = "; ".join(f"artifact {c.name} ({c.entry['file']}): " + "; ".join(self.failure_lines(c)) for c in failing)
        kind = ParityError if any(c.parity is None or not c.parity.passed for c in failing) else DegradationError
        raise kind(f"{len(failing)} of {len(self.checks)} artifacts fail the gate: {text}")


def _parity_cell(report):
    """The statistic a precision's rule judges: max abs error, or the lowest SQNR under the int8 rule."""
    found = report.summary()
    if any(o.min_sqnr_db is not None for o in report.outputs.values()):
        return f"{found['sqnr_db']:.1f} dB"
    return f"{found['max_abs']:.2g}"


def _ms(value):
    return "-" if value is None else f"{value:.3g}"


def _tolerance_line():
    return ", ".join(f"{k} {rule_text(rule)}" for k, rule in TOLERANCE.items())


def rule_text(rule):
    """A parity rule in words: ``atol 0.05 + rtol 0.02`` or ``SQNR >= 20 dB``."""
    if "min_sqnr_db" in rule:
        return f"SQNR >= {rule['min_sqnr_db']:g} dB per output"
    return f"atol {rule['atol']:g} + rtol {rule['rtol']:g}"


def validate_targets(folder, run=None, config=None, data=None, max_degradation=0.01, cache_dir=None):
    """Gate every artifact in ``folder`` (see the module doc); returns :class:`TargetsValidation`."""
    folder = Path(folder)
    found = read_targets(folder)
    run = Path(run or found["run"])
    ev = Evaluation(run, config, data, cache_dir)
    check_teachers(ev.meta, ev.config, folder / "targets.json")
    checks = [check_artifact(folder, entry, ev, max_degradation) for entry in found["artifacts"]]
    result = TargetsValidation(
        folder,
        {"source": ev.label, "samples": len(ev.split), "labels": bool(ev.split.labels)},
        checks,
        found.get("skipped", []),
        max_degradation,
    )
    for entry, check in zip(found["artifacts"], checks):
        entry["results"] = check.results()
    write_json_atomic(folder / "targets.json", found)
    write_json_atomic(folder / "validation.json", result.to_dict())
    write_text_atomic(folder / "report.md", result.to_markdown())
    return result
