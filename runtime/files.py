"""Files written whole or not at all: each goes to a temporary name beside its
target and is renamed into place (an atomic rename on one file system), so a crash
or a full disk never leaves a half-written file under the real name.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_text_atomic(folder / "run.json", '{"ok": true}').read_text()
'{"ok": true}'
>>> sorted(p.name for p in folder.iterdir())
['run.json']
"""

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from amalgam.runtime.errors import BadInputError


def temp_beside(path):
    """A fresh temporary name in ``path``'s folder: ``.<name>.<pid>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path``'s content to (a file or a folder); on
    success it replaces ``path`` (an old folder there is removed first), on any error
    it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file beside it; returns ``path``.
    A folder that cannot be written is a :class:`BadInputError` naming ``path``."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError as e:  # unwritable or missing folder, full disk
        raise BadInputError(f"{path}: cannot write the file ({e.strerror or e})") from e
    return Path(path)


def write_json_atomic(path, value):
    """``value`` as indented JSON at ``path``, written atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(value, indent=2))
