"""`vaelab train`: train a run, draw its standard figures, and tidy up after a failed start."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

import torch

from vaelab.bundles import is_bundle
from vaelab.cli.arguments import show_progress
from vaelab.cli.run_images import standard_figures
from vaelab.cli.train_flags import add_train_parser, train_config_from_args
from vaelab.errors import VaelabError, plural
from vaelab.training.checkpoint import read_config, read_meta, resolve_checkpoint
from vaelab.training.config import RunConfig
from vaelab.training.distributed import process_rank
from vaelab.training.runs import LAST, RUN_ENTRIES, is_run_folder
from vaelab.training.session import check_resumable
from vaelab.training.trainer import train

logger = logging.getLogger(__name__)


def _epochs_done(run_dir: Path) -> int | None:
    """The epoch of the run's last checkpoint, or None when it has none."""
    try:
        return int(read_meta(resolve_checkpoint(run_dir, prefer=LAST))["epoch"])
    except (VaelabError, KeyError, TypeError, ValueError):
        return None


def saved_state(run_dir: Path) -> str:
    """What an interrupted or failed training run left behind, in words."""
    try:
        meta = read_meta(resolve_checkpoint(run_dir, prefer=LAST))
        epoch, batch, step = int(meta["epoch"]), int(meta.get("batch", 0)), int(meta["step"])
    except (VaelabError, KeyError, TypeError, ValueError):
        return "no checkpoint had been saved yet"
    where = f"epoch {epoch}" if batch == 0 else f"step {step} (batch {batch} of epoch {epoch + 1})"
    return f"last/ in {run_dir} holds {where}; continue with: vaelab train --resume {run_dir}"


def _check_more_epochs(run_dir: Path, config: RunConfig) -> None:
    done = _epochs_done(run_dir)
    if done is not None and done >= config.train.epochs:
        raise VaelabError(
            f"{run_dir} has already trained {plural(done, 'epoch')}; pass --epochs N with "
            f"N > {done} to train it longer"
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what training will create)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unfinished(run_dir: Path, created: Path | None, before: set[str]) -> None:
    """After a failure before the first checkpoint, remove what the attempt wrote (the run
    entries that did not exist before it): they hold nothing worth keeping, and they would
    block the next `vaelab train --out` there. Nothing that was there before is touched."""
    if not run_dir.is_dir() or _epochs_done(run_dir) is not None:
        return
    for entry in set(RUN_ENTRIES) - before:
        target = run_dir / entry
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)  # made by this attempt, so nothing else is in it


def train_run(
    config: RunConfig, run_dir: Path, *, resume: bool, force: bool, progress: bool, figures: bool
) -> list[Path]:
    """Train, then write the three standard figures into the run folder; return what was made."""
    if resume:  # what may not change first, then whether there is anything left to train
        check_resumable(read_config(resolve_checkpoint(run_dir, prefer=LAST)), config)
        _check_more_epochs(run_dir, config)
    verb = "resuming" if resume else "training"
    logger.info("%s a %s on %s into %s", verb, config.model.model, config.data.dataset, run_dir)
    created = _first_missing(run_dir)
    before = {entry for entry in RUN_ENTRIES if (run_dir / entry).exists()}
    fresh = not resume and not is_run_folder(run_dir)  # never tidy away an older run
    try:
        result = train(config, run_dir, resume=resume, force=force, progress=progress)
    except BaseException:  # including Ctrl-C: tidy up, then let the CLI report it
        if fresh:
            _remove_unfinished(run_dir, created, before)
        raise
    watched = "validation" if any(k.startswith("val/") for k in result.metrics) else "training"
    logger.info(
        "done: %s, best %s loss %.3f nats per example%s",
        plural(result.epochs, "epoch"),
        watched,
        result.best_loss,
        " (stopped early)" if result.stopped_early else "",
    )
    paths = [run_dir]
    if figures and process_rank() == 0:  # under torchrun, one process draws them
        paths += standard_figures(run_dir, seed=config.train.seed)
    return paths


def add_parsers(subparsers: Any) -> None:
    """The `train` subcommand (see `train_flags`)."""
    add_train_parser(subparsers)


def _refuse_bundles(args: argparse.Namespace) -> None:
    """A bundle holds no training state, and training into one would change it."""
    for value in (args.resume, args.out):
        if value is not None and is_bundle(value):
            raise VaelabError(
                f"{value} is a bundle, which holds no training state and is not trained into; "
                f"start a run from its configuration: vaelab train --config "
                f"{shlex.quote(str(value))} --out runs/NAME"
            )


def _train(args: argparse.Namespace) -> list[Path]:
    _refuse_bundles(args)
    config, run_dir, resume = train_config_from_args(args)
    try:
        return train_run(
            config,
            run_dir,
            resume=resume,
            force=args.force,
            progress=show_progress(args),
            figures=not args.no_figures,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(saved_state(run_dir)) from None
    except torch.cuda.OutOfMemoryError:
        raise VaelabError(
            f"out of GPU memory; try a smaller --batch-size ({saved_state(run_dir)})"
        ) from None


COMMANDS = {"train": _train}
