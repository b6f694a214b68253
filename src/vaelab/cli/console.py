"""The `vaelab` command's console: log records to stdout/stderr, and its one-line errors."""

from __future__ import annotations

import logging
import re
import sys

from tqdm import tqdm


class _ConsoleHandler(logging.Handler):
    """Progress to stdout, warnings to stderr, both through tqdm so a progress bar stays whole.

    Keeping information off stderr means a failed command's stderr is its one error line.
    The streams are looked up at each record, so redirecting sys.stdout later still works.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                text = f"vaelab: {record.levelname.lower()}: {record.getMessage()}"
                tqdm.write(text, file=sys.stderr)
            else:
                tqdm.write(record.getMessage(), file=sys.stdout)
        except Exception:  # never let a broken console kill training; logging reports it
            self.handleError(record)


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
