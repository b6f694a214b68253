"""Hooks into the training loop, for notebooks, tools and tests: `train(..., callbacks=...)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Callbacks:
    """Subclass and override the hooks you need; the defaults do nothing. Under torchrun each
    process calls its own. An exception raised in a hook stops training as a crash would:
    `last/` keeps the state of the latest save, and `resume=True` continues from there.

    Hooks observe; they must not change the tensors they are given.
    """

    def on_batch(self, x: torch.Tensor, *, step: int) -> None:
        """Before optimisation step `step` (counted from 0 over the whole run), with this
        process's share of the batch, x (B, C, H, W) as stored (before binarisation); under
        torchrun B is 0 on a process that has no share of a small last batch."""

    def on_checkpoint(self, which: str, path: Path) -> None:
        """After the checkpoint `which` ("best" or "last") was written to the folder `path`;
        only on the process that writes checkpoints (rank 0)."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """After an epoch's `record` (its line of metrics.jsonl) was logged and its
        checkpoints were saved."""
