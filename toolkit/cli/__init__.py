"""The ``amalgam`` command. Subcommands load lazily, so that ``amalgam export-teacher
keras`` runs in an environment without torch.

Every :class:`~amalgam.runtime.errors.AmalgamError` becomes one line on stderr and its exit
code (2 bad input, 1 failed check); no traceback.
"""

import importlib
import sys

import click

from amalgam.runtime.errors import AmalgamError

# command name -> ("module:function", short help); each module holds one command.
# The short help lives here so that `amalgam --help` imports no command (and no torch).
COMMANDS = {
    "inspect": ("amalgam.toolkit.cli.inspect_cmd:inspect", "Show a model's inputs, outputs and candidate blocks."),
    "export-teacher": (
        "amalgam.toolkit.cli.export_teacher_cmd:export_teacher",
        "Export a torch, Keras, JAX or scikit-learn teacher to ONNX.",
    ),
    "amalgamate": (
        "amalgam.toolkit.cli.amalgamate_cmd:amalgamate",
        "Train a task-customized student from the teachers.",
    ),
    "export": ("amalgam.toolkit.cli.export_cmd:export", "Export a trained student to a deployable ONNX file."),
    "validate": (
        "amalgam.toolkit.cli.validate_cmd:validate",
        "Check a student ONNX file: numeric and task-level parity.",
    ),
    "run": ("amalgam.toolkit.cli.run_cmd:run", "Amalgamate, export and validate in one go."),
    "plan": ("amalgam.toolkit.cli.plan_cmd:plan", "Estimate a run's cache bytes, params and time before it runs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="amalgam")
def cli():
    """Knowledge amalgamation over ONNX: teachers in, one validated student out."""


def main(argv=None):
    try:
        code = cli.main(args=argv, standalone_mode=False)
    except AmalgamError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
