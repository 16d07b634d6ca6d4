"""One OS file lock per target cache entry, so that independent jobs building one key take turns.

Two jobs (two ``amalgam`` commands, not two ranks of one torchrun job) that need the
same entry at the same time would otherwise both compute it and replace each other's
chunks under each other's manifest. The first to take ``<entry>.lock`` builds; the
other waits, then reads the finished entry (runtime.cache). In a torchrun job only
rank 0 takes the lock, for the whole job.

The lock is ``fcntl.flock`` on ``<entry>.lock`` beside the entry: the OS releases it
when its holder exits, crashed or killed, so a dead job never leaves the key blocked.
The file is never removed (removing it would let a waiter lock a file that is no
longer there); it holds the last holder's pid and host, for the waiting line. On a
filesystem that refuses file locks the entry is built unlocked, as before, with a
line that says so. (``filelock``, installed with torch, takes the same flock but, where
flock is refused, switches to a marker-file lock with its own staleness rules and a
Python warning; one plain flock keeps the behaviour per mount simple to state:
docs/scaling.md.)
"""

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class KeyLock:
    """The lock file ``path``: :meth:`try_acquire` without waiting, :meth:`release` when done."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None
        self.unsupported = fcntl is None

    def try_acquire(self):
        """True when this process now holds the lock (or locks are unsupported here);
        False while another process holds it."""
        if self.unsupported:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as e:
            os.close(fd)
            if e.errno not in _UNSUPPORTED:
                raise
            self.unsupported = True
            return True
        self.fd = fd
        with contextlib.suppress(OSError):  # who holds it, for the waiting line; a full disk only loses that
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        return True

    def holder(self):
        """``pid N on HOST`` of the process holding the lock, as it wrote it (best effort)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            owner = json.loads(self.path.read_text())
            return f"pid {int(owner['pid'])} on {owner['host']}"
        return "another process"

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def take_turn(lock, rank, broadcast, tell=True, poll=1.0):
    """Return on every rank of a job once its rank 0 holds ``lock``, polling every ``poll``
    seconds; with ``tell``, one line on stderr when rank 0 has to wait for another job.
    Each poll is one ``broadcast`` (rank 0's value on every rank), so the job's other
    ranks wait in step with rank 0 however long the other job takes, never in one
    collective that would time out."""
    waited = False
    while not broadcast(lock.try_acquire() if rank == 0 else None):
        if not waited and tell and rank == 0:
            _say(
                f"{lock.path.with_suffix('')}: {lock.holder()} is building this cache entry; "
                f"waiting for its lock ({lock.path.name}), then reading what it built"
            )
        waited = True
        time.sleep(poll)
    if lock.unsupported and rank == 0 and tell:
        _say(
            f"{lock.path}: this filesystem refuses file locks; building unlocked (another job building "
            f"the same entry at the same time would collide with this one)"
        )


def _say(line):
    tqdm.write(line, file=sys.stderr)
