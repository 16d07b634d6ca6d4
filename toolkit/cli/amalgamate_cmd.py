"""``amalgam amalgamate CONFIG.yaml [--out DIR] [--resume]``."""

import click


@click.command("amalgamate")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run dir (default: the config's `output`).")
@click.option("--resume", is_flag=True, help="Continue a killed run in the same run dir with the same config.")
@click.option("--overwrite", is_flag=True, help="Start over in a run dir that already holds a run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set training.finetune_epochs=2.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Target cache root (default: next to the run dir).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
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
    from toolkit.eval.report import print_summary
    from toolkit.method.amalgamate import amalgamate as run

    config = load_config(config_path, list(overrides))
    metrics = run(config, out=out, resume=resume, overwrite=overwrite, quiet=quiet, cache_root=cache_dir)
    print_summary(metrics)
