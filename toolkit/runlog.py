"""The run's metrics log (JSON lines) and progress bars.

Every record is one line of ``metrics.jsonl`` with an ``event`` key (``epoch``,
``stage``, ``branching``, ``eval``...), flushed as it is written, so a killed run
keeps what it logged. Progress goes to stderr through tqdm, off when ``quiet``.
"""

import json
import sys
import time

from tqdm.auto import tqdm


class RunLog:
    def __init__(self, path, quiet=False):
        self.path = path
        self.quiet = quiet

    def write(self, event, **fields):
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        return record

    def say(self, message):
        if not self.quiet:
            tqdm.write(message, file=sys.stderr)

    def progress(self, iterable, desc, total=None):
        return tqdm(
            iterable, desc=desc, total=total, disable=self.quiet, leave=False, file=sys.stderr, dynamic_ncols=True
        )


def read_log(path, event=None):
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if event is None or r["event"] == event]
