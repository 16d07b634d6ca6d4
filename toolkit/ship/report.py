"""``report.json`` of ``amalgam run``: a stable schema (documented in docs/report.md).

::

    {"tasks": [{"name": str, "teacher": {"name": str, "accuracy": float|null, "f1": float|null},
                "kind": "binary"|"multiclass",
                "student": {"accuracy": float|null, "f1": float|null, "agreement": float}}],
     "student":  {"params": int, "onnx_bytes": int, "latency_ms": {"b1": float|null, "b64": float|null}},
     "teachers": {"params": int, "onnx_bytes": int, "latency_ms": {"b1": float|null, "b64": float|null}},
     "parity": {"max_abs": float|null, "p99_abs": float|null, "passed": bool},
     "passed": bool}

Paper terms: each task row compares the student (TargetNet) with the teacher the
task was chosen from; "teachers" is every teacher serving a chosen task, summed,
as a user would otherwise have to run them side by side.
"""

from amalgam.toolkit.eval.tables import footprint_table

FOOTPRINT_KEYS = ("params", "onnx_bytes", "latency_ms")


def run_report(validation, student, teachers):
    """The report dict from a :class:`~amalgam.toolkit.ship.validate.Validation` and two footprints
    (:func:`~amalgam.toolkit.ship.latency.footprint` of the student, :func:`~amalgam.toolkit.ship.latency.total` of the teachers)."""
    return {
        "tasks": [
            {"name": r["name"], "teacher": dict(r["teacher"]), "kind": r["kind"], "student": dict(r["student"])}
            for r in validation.tasks
        ],
        "student": {k: student[k] for k in FOOTPRINT_KEYS},
        "teachers": {k: teachers[k] for k in FOOTPRINT_KEYS},
        "parity": validation.parity_summary(),
        "passed": validation.passed,
    }


def run_markdown(report, validation):
    """report.md: the verdict, the footprint, then the validation's own Markdown."""
    return "\n".join(
        [
            f"# amalgam run: {'PASS' if report['passed'] else 'FAIL'}",
            "",
            "## Footprint (ONNX Runtime, CPU)",
            "",
            footprint_table(report),
            "",
            validation.to_markdown().replace("# Student validation", "## Student validation", 1),
        ]
    )
