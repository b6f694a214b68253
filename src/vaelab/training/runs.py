"""The run folder: what a run writes, and the checks that keep one run from clobbering another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from vaelab.errors import VaelabError
from vaelab.training.checkpoint import CONFIG_FILE, read_meta
from vaelab.training.config import RunConfig
from vaelab.training.metrics import METRICS_FILE

LAST = "last"
BEST = "best"
FIGURES = ("samples.png", "reconstructions.png", "interpolation.png", "plots", "report.html")
EVAL_FILE = "eval.json"  # written by `vaelab eval`
MEASUREMENTS = (EVAL_FILE,)
CHECKPOINTS = (LAST, BEST, f".{LAST}.old", f".{BEST}.old")
# What --force clears in a vaelab run folder; nothing else is ever deleted.
PRIOR = "prior"  # a VQ-VAE's fitted prior (training/code_prior.py): it belongs to the weights
RUN_ENTRIES = (
    CONFIG_FILE,
    METRICS_FILE,
    *CHECKPOINTS,
    "tensorboard",
    *FIGURES,
    *MEASUREMENTS,
    PRIOR,
)
STALE_TEMPORARIES = (f".{LAST}.tmp-*", f".{BEST}.tmp-*")  # left by a kill during a save


def has_checkpoint(path: Path) -> bool:
    """Whether a folder holds a vaelab checkpoint (possibly only the `.old` copy of one)."""
    for name in CHECKPOINTS:
        try:
            read_meta(path / name)
            return True
        except VaelabError:
            continue
    return False


def is_run_folder(path: Path) -> bool:
    """Whether vaelab wrote this folder: a vaelab checkpoint, or a config.json it can read.
    File names alone prove nothing: a user's own `config.json` or `best/` is not a run."""
    if has_checkpoint(path):
        return True
    try:
        RunConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        return True
    except (OSError, ValueError, TypeError, AttributeError, VaelabError):
        return False


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written checkpoint folders that a killed save left behind."""
    for pattern in STALE_TEMPORARIES:
        for stale in run_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def check_run_folder(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Raise unless a run may be written to `run_dir`; changes nothing on disk."""
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"output path {run_dir} is a file, not a folder")
    if resume:
        if not is_run_folder(run_dir):
            raise VaelabError(f"nothing to resume: {run_dir} holds no vaelab run")
        if not has_checkpoint(run_dir):
            raise VaelabError(
                f"nothing to resume: {run_dir} stopped before its first checkpoint; "
                "train it again into the same folder (--out)"
            )
        return
    if is_run_folder(run_dir) and not has_checkpoint(run_dir):
        return  # a run that stopped before saving anything: nothing to lose by starting over
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if is_run_folder(run_dir):
        if not force:
            raise VaelabError(
                f"output folder {run_dir} already holds another run; pass resume=True "
                "(--resume) to continue it, force=True (--force) to start over, or choose "
                "another folder (--out)"
            )
        return
    clashes = [entry for entry in RUN_ENTRIES if (run_dir / entry).exists()]
    if clashes:
        raise VaelabError(
            f"output folder {run_dir} holds {clashes[0]}, which vaelab did not write; move it "
            "or choose another folder (--out); force=True (--force) only replaces vaelab's "
            "own runs"
        )
    if not force:
        raise VaelabError(
            f"output folder {run_dir} already holds other files; pass force=True (--force) to "
            "write the run beside them, or choose another folder (--out)"
        )


def prepare_run_folder(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Create `run_dir`, refusing to overwrite another run unless `force` (or `resume`)."""
    check_run_folder(run_dir, resume=resume, force=force)
    if resume:
        remove_stale_temporaries(run_dir)
        return
    if run_dir.is_dir() and is_run_folder(run_dir):  # --force, or a run without checkpoints
        remove_stale_temporaries(run_dir)
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
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VaelabError(f"device {name} was requested but no CUDA GPU is available; use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise VaelabError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
