"""``amalgam amalgamate CONFIG.yaml [--out DIR] [--resume]``."""

import click

from toolkit.cli.options import run_dir_options


@click.command("amalgamate")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@run_dir_options
def amalgamate(config_path, out, resume, overwrite, overrides, cache_dir, quiet):
    """Train a task-customized student from the teachers in CONFIG.yaml.

    Runs the four steps of "Amalgamating Filtered Knowledge": target caching,
    block-by-block training, branch-out, fine-tune; then the KD baseline. Writes
    the student (rebuildable with no user code), branches.json, metrics.json,
    metrics.jsonl and plots/ into the run dir.

    \b
    Example:
      amalgam amalgamate samples/fashion_mnist/config.yaml --out runs/fm
    """
    from toolkit.config import load_config
    from toolkit.eval.tables import run_summary
    from toolkit.method.amalgamate import amalgamate as run

    config = load_config(config_path, list(overrides))
    metrics = run(config, out=out, resume=resume, overwrite=overwrite, quiet=quiet, cache_root=cache_dir)
    click.echo(run_summary(metrics))
