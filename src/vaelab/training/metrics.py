"""Per-epoch metrics: appended to `metrics.jsonl` in the run folder, and to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError
from vaelab.files import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics file, oldest first (a torn last line is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash mid-write
    return records


def check_tensorboard() -> None:
    """Raise a one-line error when --tensorboard cannot work here."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise VaelabError(
            "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'"
        ) from None


class MetricsLog:
    """Appends one JSON object per epoch; optionally mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.writer = None
        if tensorboard:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def keep_until(self, epoch: int) -> None:
        """On resume: drop records of epochs after the checkpoint being resumed."""
        kept = [r for r in read_metrics(self.path.parent) if r.get("epoch", 0) <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name not in ("epoch", "step") and isinstance(value, int | float):
                    self.writer.add_scalar(name, value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
