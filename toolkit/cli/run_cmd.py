"""``amalgam run CONFIG.yaml [--out DIR] [--resume]``: amalgamate, export, validate, report."""

from pathlib import Path

import click

from amalgam.toolkit.cli.options import max_degradation_option, run_dir_options


@click.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@run_dir_options
@max_degradation_option
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="T",
    help="Edge target to ship too, as `amalgam export --target` (default: the config's export.targets).",
)
def run(config_path, out, resume, overwrite, overrides, cache_dir, quiet, max_degradation, targets):
    """Amalgamate, export and validate in one go; exit code as `amalgam validate`.

    Writes into the run dir: student.onnx (and student.raw.onnx), report.json
    (schema: docs/report.md), report.md and plots/report_tasks.png; with edge
    targets, targets/ (one artifact per target, each gated). With --resume, a
    killed run continues from its last checkpoint.

    Under torchrun, every process trains (as `amalgam amalgamate`); rank 0 then
    exports, validates and reports.

    \b
    Example:
      amalgam run samples/fashion_mnist/config.yaml --out runs/fm
    """
    from amalgam.toolkit.config import load_config
    from amalgam.toolkit.method.amalgamate import amalgamate_job
    from amalgam.toolkit.ship.run import ship_run

    config = load_config(config_path, list(overrides))
    from amalgam.toolkit.ship.edge import check_available, parse_targets

    check_available(parse_targets(targets or config.export.targets))  # before training: exit 2 now
    out = Path(out or config.output)
    ranks, _ = amalgamate_job(config, out, resume, overwrite, quiet, cache_dir)
    if not ranks.is_main:
        return
    shipped = ship_run(config, out, max_degradation=max_degradation, cache_dir=cache_dir, targets=targets)
    click.echo(shipped.summary())
    shipped.raise_if_failed()
