"""``amalgam run CONFIG.yaml [--out DIR] [--resume]``: amalgamate, export, validate, report."""

from pathlib import Path

import click

from toolkit.cli.options import max_degradation_option, run_dir_options


@click.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@run_dir_options
@max_degradation_option
def run(config_path, out, resume, overwrite, overrides, cache_dir, quiet, max_degradation):
    """Amalgamate, export and validate in one go; exit code as `amalgam validate`.

    Writes into the run dir: student.onnx (and student.raw.onnx), report.json
    (schema: docs/report.md), report.md and plots/report_tasks.png. With --resume,
    a killed run continues from its last checkpoint.

    \b
    Example:
      amalgam run samples/fashion_mnist/config.yaml --out runs/fm
    """
    from toolkit.config import load_config
    from toolkit.method.amalgamate import amalgamate
    from toolkit.ship.run import ship_run

    config = load_config(config_path, list(overrides))
    out = Path(out or config.output)
    amalgamate(config, out=out, resume=resume, overwrite=overwrite, quiet=quiet, cache_root=cache_dir)
    shipped = ship_run(config, out, max_degradation=max_degradation, cache_dir=cache_dir)
    click.echo(shipped.summary())
    shipped.validation.raise_if_failed()
