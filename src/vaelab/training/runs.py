"""The run folder: what a run writes, and the checks that keep one run from clobbering another."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vaelab.errors import VaelabError
from vaelab.training.checkpoint import CONFIG_FILE
from vaelab.training.metrics import METRICS_FILE

LAST = "last"
BEST = "best"
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, LAST, BEST, f".{LAST}.old", f".{BEST}.old", "tensorboard")


def is_run_folder(path: Path) -> bool:
    return any((path / entry).exists() for entry in RUN_ENTRIES)


def check_run_folder(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Raise unless a run may be written to `run_dir`; changes nothing on disk."""
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"output path {run_dir} is a file, not a folder")
    if resume:
        if not is_run_folder(run_dir):
            raise VaelabError(f"nothing to resume: {run_dir} holds no vaelab run")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        what = "another run" if is_run_folder(run_dir) else "other files"
        raise VaelabError(
            f"output folder {run_dir} already holds {what}; pass --resume to continue it, "
            "--force to start over, or choose another --out"
        )


def prepare_run_folder(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Create `run_dir`, refusing to overwrite another run unless `force` (or `resume`)."""
    check_run_folder(run_dir, resume=resume, force=force)
    if resume:
        return
    if run_dir.is_dir():  # with --force: clear the old run
        for entry in RUN_ENTRIES:  # only the run's own files; anything else is left alone
            target = run_dir / entry
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda was requested but no CUDA GPU is available; use cpu")
    return torch.device(name)
