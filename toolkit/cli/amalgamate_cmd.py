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

    Under torchrun, every process runs this command: the target pass and each
    phase's batches are shared across them (docs/scaling.md); a process torchrun
    restarts (--max-restarts) resumes from the last checkpoint.

    \b
    Example:
      amalgam amalgamate samples/fashion_mnist/config.yaml --out runs/fm
      torchrun --nproc-per-node 2 -m toolkit.cli amalgamate samples/fashion_mnist/config.yaml --out runs/fm
    """
    from toolkit.config import load_config
    from toolkit.dist import close, init_from_env
    from toolkit.eval.report import print_summary
    from toolkit.method.amalgamate import amalgamate as run

    config = load_config(config_path, list(overrides))
    ranks = init_from_env(config.training.device)
    try:
        metrics = run(config, out=out, resume=resume or ranks.restarted, overwrite=overwrite and not ranks.restarted,
                      quiet=quiet, cache_root=cache_dir, ranks=ranks)
    finally:
        close()
    if ranks.is_main:
        print_summary(metrics)
