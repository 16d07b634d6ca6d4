"""The ``amalgam`` command. Subcommands load lazily, so that ``amalgam export-teacher
keras`` runs in an environment without torch.

Every :class:`runtime.errors.AmalgamError` becomes one line on stderr and its exit
code (2 bad input, 1 failed check); no traceback.
"""

import importlib
import sys

import click

from runtime.errors import AmalgamError

# command name -> "module:function"; each module holds one command.
COMMANDS = {
    "inspect": "toolkit.cli.inspect_cmd:inspect",
    "export-teacher": "toolkit.cli.export_teacher_cmd:export_teacher",
    "amalgamate": "toolkit.cli.amalgamate_cmd:amalgamate",
    "export": "toolkit.cli.export_cmd:export",
    "validate": "toolkit.cli.validate_cmd:validate",
    "run": "toolkit.cli.run_cmd:run",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
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
