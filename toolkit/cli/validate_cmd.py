"""``amalgam validate STUDENT.onnx``: the parity gate (exit 0 pass, 1 parity failure, 2 bad input)."""

import click

from amalgam.runtime.parity import SRTOL
from amalgam.toolkit.cli.options import float_value, max_degradation_option, named_values


@click.command("validate")
@click.argument("student", metavar="STUDENT.onnx|DIR", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="Run dir the student was exported from.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Run config naming the teachers and data (default: RUN_DIR/config.json).",
)
@click.option("--data", metavar="SRC", help="Evaluation images (FORMAT:PATH, .npz or folder) instead of data.eval.")
@click.option("--atol", default=1e-4, show_default=True, help="Absolute tolerance of numeric parity.")
@click.option("--rtol", default=1e-3, show_default=True, help="Relative tolerance of numeric parity.")
@click.option(
    "--srtol",
    default=SRTOL,
    show_default=True,
    help="Tolerance relative to the output's largest magnitude: abs(a-b) <= atol + rtol*abs(b) + srtol*max(abs(b)).",
)
@click.option(
    "--tolerance",
    "tolerances",
    multiple=True,
    metavar="OUTPUT:ATOL",
    callback=named_values(float_value, "OUTPUT:ATOL, e.g. smiling:1e-3"),
    help="Own atol for one output (repeatable).",
)
@max_degradation_option
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    metavar="FILE.json",
    help="JSON report (Markdown next to it); default <student>.validation.json.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Target cache root for the teachers' pass.")
def validate(student, run_dir, config_path, data, atol, rtol, srtol, tolerances, max_degradation, report, cache_dir):
    """Check STUDENT.onnx against the PyTorch student and against its teachers; or every
    artifact of DIR (written by `amalgam export --target`), each on its own runtime.

    Numeric parity (fp32 only): per output max / mean / p99 of absolute and
    relative error, ONNX vs PyTorch and simplified vs unsimplified. Task level:
    agreement with teachers and PyTorch student; with labels, accuracy and F1,
    failing a task whose F1 falls more than --max-degradation below its teacher's.

    \b
    Example:
      amalgam validate student.onnx --run runs/fm --max-degradation 0.01 --report report.json
      amalgam validate edge/      (the run dir is the one targets.json names, unless --run)
    """
    from pathlib import Path

    if Path(student).is_dir():
        return validate_folder(student, run_dir, config_path, data, max_degradation, cache_dir)
    from amalgam.toolkit.eval.tables import validation_task_table
    from amalgam.toolkit.ship.validate import validate_student, write_reports

    result = validate_student(
        student,
        run=run_dir,
        config=config_path,
        data=data,
        atol=atol,
        rtol=rtol,
        srtol=srtol,
        tolerances=tolerances,
        max_degradation=max_degradation,
        cache_dir=cache_dir,
    )
    json_path, md_path = write_reports(result, report)
    click.echo(validation_task_table(result.tasks, result.torch_agreement))
    summary = result.parity_summary()
    if result.numeric:
        click.echo(
            f"\nnumeric parity: worst max abs {summary['max_abs']:.3g}, p99 abs {summary['p99_abs']:.3g}: "
            f"{'pass' if summary['passed'] else 'FAIL'}"
        )
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{'PASS' if result.passed else 'FAIL'}; report: {json_path} and {md_path}")
    result.raise_if_failed()


def validate_folder(folder, run_dir, config_path, data, max_degradation, cache_dir):
    """Gate every artifact of ``folder``; print the table and one line per failure."""
    from amalgam.toolkit.ship.edge_gate import validate_targets

    result = validate_targets(folder, run_dir, config_path, data, max_degradation, cache_dir)
    click.echo(result.table())
    for line in result.to_markdown().splitlines():
        if line.startswith("- FAIL") or line.startswith("- not shipped"):
            click.echo(line[2:])
    click.echo(f"{'PASS' if result.passed else 'FAIL'}; report: {folder}/report.md, {folder}/targets.json")
    result.raise_if_failed()
