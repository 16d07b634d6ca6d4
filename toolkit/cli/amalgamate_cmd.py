"""``amalgam amalgamate CONFIG.yaml [--out DIR] [--resume]``."""

import click

from amalgam.toolkit.cli.options import run_dir_options


@click.command("amalgamate")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@run_dir_options
def amalgamate(config_path, out, resume, overwrite, overrides, cache_dir, quiet):
    """Train a task-customized student from the teachers in CONFIG.yaml.

    Runs the four steps of "Amalgamating Filtered Knowledge": target caching,
    block-by-block training, branch-out, fine-tune; then the KD baseline. Writes
    the student (rebuildable with no user code), branches.json, metrics.json,
    metrics.jsonl and plots/ into the run dir.

    Under torchrun, every process runs this command: the target pass and each
    phase's batches are shared across them (docs/scaling.md); a process torchrun
    restarts (--max-restarts) resumes from the last checkpoint.

    \b
    Example:
      amalgam amalgamate samples/fashion_mnist/config.yaml --out runs/fm
      torchrun --nproc-per-node 2 -m amalgam amalgamate samples/fashion_mnist/config.yaml --out runs/fm
    """
    from amalgam.toolkit.config import load_config
    from amalgam.toolkit.eval.tables import run_summary
    from amalgam.toolkit.method.amalgamate import amalgamate_job

    config = load_config(config_path, list(overrides))
    ranks, metrics = amalgamate_job(config, out, resume, overwrite, quiet, cache_dir)
    if ranks.is_main:
        click.echo(run_summary(metrics))
