"""Run ``amalgam`` in-process as a user would, returning (exit code, stderr text)."""

import pytest

from amalgam.toolkit.cli import main


def amalgam(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, capsys.readouterr()
