"""Framework noise kept off the terminal: what a framework prints goes to a log.

The exporters and converters we call talk a lot: torch.onnx reports its progress
on stdout, the legacy tracer raises TracerWarnings, a failed ``torch.export``
logs the torch.fx source of the module, C++ code writes to the process's file
descriptors directly. None of it is for the user, who sees our one-line error or
our progress. :func:`framework_output` captures all of it while a block runs:
file descriptors 1 and 2, ``sys.stdout`` / ``sys.stderr`` (also when a test or a
tool replaced them), Python warnings and log records, and appends the text to
``log_path`` (or, with no path, to the ``amalgam.framework`` logger at DEBUG).
"""

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger("amalgam.framework")


class _Records(logging.Handler):
    """Keeps the text of every log record that reaches the root logger."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _fds_to(sink):
    """Point file descriptors 1 and 2 at ``sink`` for the block, then back."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        for stream in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@contextlib.contextmanager
def framework_output(what, log_path=None):
    """Capture what frameworks print while the block runs; ``what`` heads the log entry."""
    text, records = io.StringIO(), _Records()
    root = logging.getLogger()
    with tempfile.TemporaryFile(mode="w+") as sink:
        try:
            root.addHandler(records)
            with (
                _fds_to(sink),
                contextlib.redirect_stdout(text),
                contextlib.redirect_stderr(text),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                yield
        finally:
            root.removeHandler(records)
            sink.seek(0)
            lines = [
                sink.read(),
                text.getvalue(),
                *records.lines,
                *(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught),
            ]
            _write(what, "\n".join(line.rstrip() for line in lines if line.strip()), log_path)


def _write(what, text, log_path):
    if not text:
        return
    if log_path is None:
        log.debug("%s:\n%s", what, text)
        return
    with contextlib.suppress(OSError):  # a log that cannot be written must not hide the real outcome
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write(f"=== {what}\n{text}\n")
