"""The run dir's on-disk format: one version number, checked before anything is loaded.

``amalgam amalgamate`` writes :data:`FORMAT` into the run record (``run.json``, beside
the amalgam version that wrote it) and into the student's ``student/spec.json``. Every
reader checks it first (``--resume``, ``amalgam export``, ``amalgam validate``, the API),
so a run or a student saved by another format gets one line saying what it is, what
was expected and what to do, never a shape mismatch deep in torch.

Formats: 1, amalgam 0.1.0 (its ``run.json`` has no ``format`` key); 2, amalgam 0.2.0
(the student's width, init, thresholds and trunk BatchNorm in ``spec.json``). Bump
:data:`FORMAT`, and add a line to :data:`WRITTEN_BY`, whenever a reader of this version
would misread a file the last one wrote.

>>> check_format("runs/fm/run.json", {"format": FORMAT}, "run dir")
>>> try:
...     check_format("runs/old/run.json", {"toolkit_version": "0.1.0"}, "run dir")
... except BadInputError as e:
...     print(e)
runs/old/run.json: run dir format 1 (written by amalgam 0.1.0); this amalgam reads format 2: re-run `amalgam amalgamate` with this version (a new --out), or read it with amalgam 0.1.0
"""

import json
from pathlib import Path

from amalgam.runtime.errors import BadInputError

#: The format this version writes and reads.
FORMAT = 2
#: Format -> the amalgam version that introduced it.
WRITTEN_BY = {1: "0.1.0", 2: "0.2.0"}
#: The run record's file name in a run dir.
RECORD = "run.json"


def check_format(path, record, what):
    """Refuse ``record`` (a loaded run.json or spec.json, from ``path``) unless it has this
    version's :data:`FORMAT`; ``what`` names the thing in the message ("run dir", "student")."""
    found = record.get("format", 1)  # amalgam 0.1.0 wrote no format into run.json
    if found == FORMAT:
        return
    wrote = record.get("toolkit_version") or WRITTEN_BY.get(found, "unknown")
    raise BadInputError(
        f"{path}: {what} format {found!r} (written by amalgam {wrote}); this amalgam reads format {FORMAT}: "
        f"re-run `amalgam amalgamate` with this version (a new --out), or read it with amalgam {wrote}"
    )


def new_record(**fields):
    """The run record a new run dir gets: this format and ``fields``."""
    return {"format": FORMAT, **fields}


def read_record(run_dir, doing):
    """The run record of ``run_dir`` (``{}`` when it has none), its format checked.
    ``doing`` says what the caller needs it for, in the message for a record that is not JSON."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: not a run record of this toolkit ({e}); {doing}") from e
    if not isinstance(record, dict):
        raise BadInputError(f"{path}: not a run record of this toolkit (found {type(record).__name__}); {doing}")
    check_format(path, record, "run dir")
    return record
