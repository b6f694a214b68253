"""What each `vaelab` subcommand does, as plain functions over paths (the CLI only parses)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vaelab.data import DataSplits, Split, load_data, load_image_file
from vaelab.errors import VaelabError
from vaelab.figures import save_image_grid
from vaelab.models import VAE, Autoencoder
from vaelab.models.networks import count_parameters
from vaelab.training.checkpoint import (
    META_FILE,
    load_checkpoint,
    read_config,
    read_meta,
    resolve_checkpoint,
)
from vaelab.training.config import RunConfig
from vaelab.training.distributed import process_rank
from vaelab.training.metrics import read_metrics
from vaelab.training.runs import LAST, RUN_ENTRIES, is_run_folder, resolve_device
from vaelab.training.trainer import train

logger = logging.getLogger(__name__)

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
INTERPOLATION_PNG = "interpolation.png"


# --- train ----------------------------------------------------------------------------------


def saved_run_config(run_dir: Path) -> RunConfig:
    """The configuration a run was trained with (from its last checkpoint), to resume it."""
    if not run_dir.is_dir():
        raise VaelabError(f"cannot resume {run_dir}: no such folder")
    if not is_run_folder(run_dir):
        raise VaelabError(f"nothing to resume: {run_dir} holds no vaelab run")
    return read_config(resolve_checkpoint(run_dir, prefer=LAST))


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
            f"{run_dir} has already trained {done} epochs; pass --epochs N with N > {done} "
            "to train it longer"
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what training will create)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unfinished(run_dir: Path, created: Path | None) -> None:
    """After a failure before the first checkpoint, remove what the attempt wrote: it holds
    nothing worth keeping, and it would block the next `vaelab train --out` there."""
    if not run_dir.is_dir() or _epochs_done(run_dir) is not None:
        return
    for entry in RUN_ENTRIES:
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
    if resume:
        _check_more_epochs(run_dir, config)
    verb = "resuming" if resume else "training"
    logger.info("%s a %s on %s into %s", verb, config.model.model, config.data.dataset, run_dir)
    created = _first_missing(run_dir)
    fresh = not resume and not is_run_folder(run_dir)  # never tidy away an older run
    try:
        result = train(config, run_dir, resume=resume, force=force, progress=progress)
    except BaseException:  # including Ctrl-C: tidy up, then let the CLI report it
        if fresh:
            _remove_unfinished(run_dir, created)
        raise
    watched = "validation" if any(k.startswith("val/") for k in result.metrics) else "training"
    logger.info("done: %d epoch%s, best %s loss %.3f nats per example%s", result.epochs,
                "" if result.epochs == 1 else "s", watched, result.best_loss,
                " (stopped early)" if result.stopped_early else "")  # fmt: skip
    paths = [run_dir]
    if figures and process_rank() == 0:  # under torchrun, one process draws them
        paths += standard_figures(run_dir, seed=config.train.seed)
    return paths


def standard_figures(run_dir: Path, *, seed: int = 0) -> list[Path]:
    """samples.png, reconstructions.png and interpolation.png of the best checkpoint."""
    model, config = _load(run_dir, "best", "cpu")
    data = _load_data(config, None)
    chosen = next((s for s in (data.test, data.val, data.train) if len(s)), data.train)
    x = chosen.x[:10]
    end = _default_end(chosen, 0)
    return [
        _save(_samples(model, 64, seed), run_dir / SAMPLES_PNG),
        _save(torch.cat([x, _reconstructions(model, x)]), run_dir / RECONSTRUCTIONS_PNG, len(x)),
        _save(_interpolation(model, chosen.x[0], chosen.x[end], 10), run_dir / INTERPOLATION_PNG),
    ]


# --- the figure commands --------------------------------------------------------------------


def _check_run(run: Path) -> None:
    if not run.exists():
        raise VaelabError(f"{run} does not exist; pass a run folder such as runs/digits-vae")


def _output(run: Path, out: str | None, default_name: str) -> Path:
    """The PNG to write: --out (a file, or a folder for the default name), else in the run."""
    if out is None:
        folder = run.parent if (run / META_FILE).is_file() else run  # a checkpoint -> its run
        return folder / default_name
    path = Path(out)
    if path.is_dir():
        path = path / default_name
    if path.suffix.lower() != ".png":
        raise VaelabError(f"--out {path} must be a .png file (or an existing folder)")
    if not path.parent.is_dir():
        raise VaelabError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _check_count(value: int, flag: str, minimum: int = 1) -> None:
    if value < minimum:
        raise VaelabError(f"{flag} must be at least {minimum}, got {value}")


def _load(run: Path, checkpoint: str, device: str) -> tuple[Autoencoder, RunConfig]:
    model, config, _ = load_checkpoint(run, device=resolve_device(device), prefer=checkpoint)
    return model, config


def _load_data(config: RunConfig, data_dir: str | None) -> DataSplits:
    data_config = config.data if data_dir is None else replace(config.data, data_dir=data_dir)
    data = load_data(data_config, progress=False)
    if tuple(data.shape) != tuple(config.model.data_shape):
        raise VaelabError(
            f"dataset {data.name} now has shape {data.shape} but the model was trained on "
            f"{config.model.data_shape}"
        )
    return data


def _split(config: RunConfig, split: str, data_dir: str | None) -> Split:
    chosen = _load_data(config, data_dir).split(split)
    if len(chosen) == 0:
        raise VaelabError(f"the {split} split of {config.data.dataset} is empty; choose another "
                          "--split")  # fmt: skip
    return chosen


def _save(images: torch.Tensor, path: Path, columns: int | None = None) -> Path:
    """A grid with `columns` columns (default: one row, or a square for many images)."""
    if columns is None:
        columns = len(images) if len(images) <= 16 else max(1, round(math.sqrt(len(images))))
    return save_image_grid(images, path, columns=columns)


@torch.inference_mode()
def _samples(model: Autoencoder, n: int, seed: int) -> torch.Tensor:
    if not isinstance(model, VAE):
        logger.info("note: the %s model has no prior; its samples decode z ~ N(0, I) and may "
                    "not look like the data", model.config.model)  # fmt: skip
    generator = torch.Generator(device=model.device).manual_seed(seed)
    return model.sample(n, generator=generator)


@torch.inference_mode()
def _reconstructions(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    return model.reconstruct(x.to(model.device)).cpu()


@torch.inference_mode()
def _interpolation(
    model: Autoencoder, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, spherical: bool = False
) -> torch.Tensor:
    """(steps + 2, C, H, W): the two originals at the ends, the decoded path between them."""
    x_a, x_b = x_a.to(model.device), x_b.to(model.device)
    frames = model.interpolate(x_a, x_b, steps, spherical=spherical)
    return torch.cat([x_a[None], frames, x_b[None]])


def sample(
    run: Path, *, n: int = 64, seed: int = 0, out: str | None = None,
    checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """A grid of n images decoded from codes drawn from the prior N(0, I)."""
    _check_run(run)
    path = _output(run, out, SAMPLES_PNG)
    _check_count(n, "--n")
    model, _ = _load(run, checkpoint, device)
    return _save(_samples(model, n, seed), path)


def reconstruct(
    run: Path, *, n: int = 10, split: str = "test", out: str | None = None,
    data_dir: str | None = None, checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """The first n images of a split (top row) above their reconstructions (bottom row)."""
    _check_run(run)
    path = _output(run, out, RECONSTRUCTIONS_PNG)
    _check_count(n, "--n")
    model, config = _load(run, checkpoint, device)
    x = _split(config, split, data_dir).x[:n]
    return _save(torch.cat([x, _reconstructions(model, x)]), path, columns=len(x))


def _is_index(value: str | None) -> bool:
    return value is None or value.lstrip("-").isdigit()


def _index(value: str | None, chosen: Split) -> int:
    index = 0 if value is None else int(value)
    if not -len(chosen) <= index < len(chosen):
        raise VaelabError(
            f"index {index} is out of range: the split has {len(chosen)} images "
            f"(0 to {len(chosen) - 1})"
        )
    return index % len(chosen)


def _default_end(chosen: Split, start: int) -> int:
    """The next image after `start` of another class (or simply the next image)."""
    if chosen.y is not None:
        others = torch.nonzero(chosen.y != chosen.y[start]).flatten()
        if len(others):
            later = others[others > start]
            return int(later[0] if len(later) else others[0])
    return (start + 1) % len(chosen)


def interpolate(
    run: Path, *, start: str | None = None, end: str | None = None, steps: int = 10,
    spherical: bool = False, split: str = "test", out: str | None = None,
    data_dir: str | None = None, checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """A strip from `start` to `end`: both originals and `steps` decodings along the path.

    Each end is an index into the split or a path to an image file (resized to the model's).
    """
    _check_run(run)
    path = _output(run, out, INTERPOLATION_PNG)
    _check_count(steps, "--steps", minimum=2)
    model, config = _load(run, checkpoint, device)
    shape = tuple(config.model.data_shape)
    chosen = _split(config, split, data_dir) if _is_index(start) or _is_index(end) else None
    if _is_index(start):
        start_index = _index(start, chosen)
        x_a = chosen.x[start_index]
    else:
        start_index, x_a = 0, load_image_file(start, shape)
    if end is None:
        x_b = chosen.x[_default_end(chosen, start_index)]
    else:
        x_b = chosen.x[_index(end, chosen)] if _is_index(end) else load_image_file(end, shape)
    return _save(_interpolation(model, x_a, x_b, steps, spherical), path)


# --- info -----------------------------------------------------------------------------------


def _info_report(run: Path) -> dict[str, Any]:
    _check_run(run)
    checkpoint = resolve_checkpoint(run)
    meta = read_meta(checkpoint)
    model, config, _ = load_checkpoint(checkpoint)
    history = read_metrics(checkpoint.parent)
    return {
        "run": str(checkpoint.parent),
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": meta.get("epoch"),
        "epochs_done": history[-1].get("epoch") if history else meta.get("epoch"),
        "parameters": count_parameters(model),
        "config": config.to_dict(),
        "last_metrics": history[-1] if history else meta.get("metrics", {}),
    }


def info(run: Path, *, as_json: bool = False) -> str:
    """A run's (or checkpoint's) configuration, size and last metrics, as text or JSON."""
    report = _info_report(run)
    if as_json:
        return json.dumps(report, indent=2)
    epochs = report["config"]["train"]["epochs"]
    lines = [
        f"run         {report['run']}",
        f"epochs      {report['epochs_done']} of {epochs}",
        f"checkpoint  {report['checkpoint']} (epoch {report['checkpoint_epoch']})",
        f"parameters  {report['parameters']:,}",
    ]
    for section, values in report["config"].items():
        lines.append(f"[{section}]")
        lines += [f"  {key} = {json.dumps(value)}" for key, value in values.items()]
    lines.append("last metrics")
    lines += [f"  {key} = {value:.6g}" if isinstance(value, float) else f"  {key} = {value}"
              for key, value in report["last_metrics"].items()]  # fmt: skip
    return "\n".join(lines)
