"""torch's CPU thread count for a block of work, put back afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` CPU threads in torch's pool (None: leave it alone), then
    put the previous number back: a library leaves no global setting changed behind it."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
