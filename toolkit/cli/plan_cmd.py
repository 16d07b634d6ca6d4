"""``amalgam plan CONFIG.yaml [--nproc N] [--json]``."""

import click


@click.command("plan")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option(
    "--nproc",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes of the job (torchrun's world size) the time estimate divides by.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(config_path, overrides, nproc, as_json):
    """Print what a run of CONFIG.yaml will cost, before anything long runs.

    Images; target-cache bytes per teacher (logits, taps); the student's cached
    inputs; frozen-prefix bytes per stage; student params; and a time estimate
    from a short timed sample (a few seconds). Writes nothing.

    \b
    Example:
      amalgam plan samples/fashion_mnist/config.yaml --nproc 4
    """
    import json

    from amalgam.toolkit.config import load_config
    from amalgam.toolkit.method.plan import make_plan, plan_text

    result = make_plan(load_config(config_path, list(overrides)), world=nproc)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else plan_text(result))
