"""Ctrl-C during training: finish the current step, save, then stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def graceful_interrupt() -> Iterator[threading.Event]:
    """While active, the first SIGINT only sets the returned event (the loop saves and stops
    at the next step boundary); a second one interrupts at once, as usual. Outside the main
    thread signals cannot be caught, and the event is simply never set."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
