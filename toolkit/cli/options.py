"""Options several commands share, declared once, and the one parser for option values
spelled ``NAME:VALUE`` (``--input-shape x:1,3,224,224``, ``--tolerance smiling:1e-3``)
or as dims (``--input-shape 1,1,28,28``).

>>> parse_dims("1,3,224,224", "--input-shape")
(1, 3, 224, 224)
>>> parse_named("x:[1,3,8,8]", "--input-shape", parse_dims, "NAME:D0,D1,...")
('x', (1, 3, 8, 8))
"""

import click

from amalgam.runtime.errors import BadInputError

DEGRADATION_HELP = (
    "How far a task's student F1 may fall below its teacher's "
    "(without labels: its teacher agreement below the PyTorch student's)."
)


def parse_dims(text, option):
    """``"1,3,224,224"`` (also ``[1,3,224,224]`` or ``1x3x224x224``) -> a tuple of positive ints."""
    try:
        shape = tuple(int(d) for d in str(text).strip("[]").replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise BadInputError(f"{option} {text!r}: expected positive integers separated by commas, e.g. 1,1,28,28")
    return shape


def parse_named(text, option, parse_value, spelling):
    """``NAME:VALUE`` -> ``(name, parse_value(VALUE, option))``; the last ':' splits, so a
    name may hold ':' itself. ``spelling`` (e.g. ``OUTPUT:ATOL``) goes in the error line."""
    name, _, value = str(text).rpartition(":")
    if name:
        try:
            return name, parse_value(value, option)
        except (BadInputError, ValueError):
            pass
    raise BadInputError(f"{option} {text!r}: expected {spelling}")


def named_values(parse_value, spelling):
    """A click callback turning repeated ``NAME:VALUE`` options into ``{name: value}``."""

    def callback(ctx, param, values):
        option = param.opts[0]
        return dict(parse_named(text, option, parse_value, spelling) for text in values)

    return callback


def float_value(text, option):
    return float(text)


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# The run dir options of `amalgam amalgamate` and `amalgam run`.
run_dir_options = _stack(
    click.option("--out", type=click.Path(file_okay=False), help="Run dir (default: the config's `output`)."),
    click.option("--resume", is_flag=True, help="Continue a killed run in the same run dir with the same config."),
    click.option("--overwrite", is_flag=True, help="Start over in a run dir that already holds a run."),
    click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set training.finetune_epochs=2.",
    ),
    click.option(
        "--cache-dir", type=click.Path(file_okay=False), help="Target cache root (default: next to the run dir)."
    ),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)

max_degradation_option = click.option("--max-degradation", default=0.01, show_default=True, help=DEGRADATION_HELP)
