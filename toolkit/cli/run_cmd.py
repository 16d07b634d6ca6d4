"""``amalgam run CONFIG.yaml [--out DIR]``: amalgamate, export, validate, report."""

from pathlib import Path

import click


def teacher_footprints(config):
    """Footprints of the teachers serving a chosen task (config order), each timed alone."""
    from toolkit.ship.latency import footprint
    from toolkit.teachers import input_shape

    owners = {teacher for teacher, _ in config.chosen_tasks()}
    return [footprint(tc.onnx, input_shape(tc.preprocess)[1:], tc.input) for tc in config.teachers if tc.name in owners]


def plot_tasks(report, path):
    """Per-task bars, teacher vs student: F1 with labels, else agreement with the teacher."""
    from toolkit.eval.plots import plot_task_bars

    key = "f1" if any(t["student"]["f1"] is not None for t in report["tasks"]) else "agreement"
    rows = [{"task": t["name"], "teacher": t["teacher"], "student": t["student"]} for t in report["tasks"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_task_bars(rows, path, key)
    return path


@click.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run dir (default: the config's `output`).")
@click.option("--overwrite", is_flag=True, help="Start over in a run dir that already holds a run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option("--max-degradation", default=0.01, show_default=True,
              help="How far a task's student F1 may fall below its teacher's "
                   "(without labels: its teacher agreement below the PyTorch student's).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Target cache root (default: next to the run dir).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(config_path, out, overwrite, overrides, max_degradation, cache_dir, quiet):
    """Amalgamate, export and validate in one go; exit code as `amalgam validate`.

    Writes into the run dir: student.onnx (and student.raw.onnx), report.json
    (schema: docs/report.md), report.md and plots/report_tasks.png.

    \b
    Example:
      amalgam run samples/fashion_mnist/config.yaml --out runs/fm
    """
    import json

    from toolkit.config import load_config
    from toolkit.method.amalgamate import amalgamate
    from toolkit.ship.export import export_student, input_shape
    from toolkit.ship.latency import footprint, total
    from toolkit.ship.report import footprint_table, run_markdown, run_report
    from toolkit.ship.validate import task_table, validate_student, write_text_atomic

    config = load_config(config_path, list(overrides))
    out = Path(out or config.output)
    amalgamate(config, out=out, overwrite=overwrite, quiet=quiet, cache_root=cache_dir)
    exported = export_student(out, out / "student.onnx")
    validation = validate_student(exported.student, run=out, max_degradation=max_degradation, cache_dir=cache_dir)
    write_text_atomic(out / "validation.json", json.dumps(validation.to_dict(), indent=2))
    spec = json.loads((out / "student" / "spec.json").read_text())
    student = footprint(exported.student, input_shape(spec["preprocess"], 1)[1:])
    report = run_report(validation, student, total(teacher_footprints(config)))
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    write_text_atomic(out / "report.md", run_markdown(report, validation))
    plot_tasks(report, out / "plots" / "report_tasks.png")
    click.echo(task_table(validation.tasks, validation.torch_agreement))
    click.echo("")
    click.echo(footprint_table(report))
    parity = report["parity"]
    click.echo(f"\nnumeric parity: max abs {parity['max_abs']:.3g}, p99 abs {parity['p99_abs']:.3g}; "
               f"{'PASS' if report['passed'] else 'FAIL'}; report: {out / 'report.json'}")
    validation.raise_if_failed()
