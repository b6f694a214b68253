"""The `vaelab` command's console: log records to stdout/stderr, and its one-line errors."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

from tqdm import tqdm


class _ConsoleHandler(logging.Handler):
    """Progress to stdout, warnings to stderr, both through tqdm so a progress bar stays whole.

    Keeping information off stderr means a failed command's stderr is its one error line.
    The streams are looked up at each record, so redirecting sys.stdout later still works.
    A stream whose reader has gone (`vaelab train | head -1`) is sent to /dev/null: the
    command goes on without it (a training run is worth more than its log lines) and ends
    with its usual exit code, without a traceback.
    """

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            text = record.getMessage()
            if stream is sys.stderr:
                text = f"vaelab: {record.levelname.lower()}: {text}"
            tqdm.write(text, file=stream)
        except BrokenPipeError:  # the reader left: stop writing there, quietly
            silence(stream)
        except Exception:  # never let a broken console kill training; logging reports it
            self.handleError(record)


def silence(stream: TextIO) -> None:
    """Point a stream whose reader has gone at /dev/null, so that later writes (and the flush
    at exit) succeed quietly instead of raising BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


def configure_logging(quiet: bool) -> None:
    """Send the package's log records to the console (only warnings when `quiet`)."""
    package = logging.getLogger("vaelab")
    package.handlers = [_ConsoleHandler()]
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False


def error(message: str) -> None:
    """Print `vaelab: error: ...` on one line of stderr."""
    one_line = re.sub(r"\s*\n\s*", " ", message.strip())
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # wipe a half-drawn progress bar
    print(f"{clear}vaelab: error: {one_line}", file=sys.stderr)
