"""What each `vaelab` subcommand does, as plain functions over paths (the CLI only parses)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from vaelab.data import DataSplits, Split, load_data, load_image_file
from vaelab.errors import VaelabError
from vaelab.figures import save_image_grid
from vaelab.models import Autoencoder
from vaelab.models.networks import count_parameters
from vaelab.training.checkpoint import (
    load_checkpoint,
    read_config,
    read_meta,
    resolve_checkpoint,
)
from vaelab.training.config import RunConfig
from vaelab.training.metrics import read_metrics
from vaelab.training.runs import LAST, resolve_device
from vaelab.training.trainer import train


def saved_run_config(run_dir: Path) -> RunConfig:
    """The configuration a run was trained with (from its last checkpoint)."""
    return read_config(resolve_checkpoint(run_dir, prefer=LAST))


def train_run(
    config: RunConfig, run_dir: Path, *, resume: bool, force: bool, progress: bool, figures: bool
) -> list[Path]:
    """Train, then write the three standard figures into the run folder; return what was made."""
    result = train(config, run_dir, resume=resume, force=force, progress=progress)
    paths = [result.run_dir]
    if figures:
        paths += [
            sample(run_dir, n=64, seed=config.train.seed),
            reconstruct(run_dir, n=10, split="test"),
            interpolate(run_dir, start=None, end=None, steps=10, split="test"),
        ]
    return paths


def _load(run: Path, checkpoint: str, device: str) -> tuple[Autoencoder, RunConfig]:
    model, config, _ = load_checkpoint(run, device=resolve_device(device), prefer=checkpoint)
    return model, config


def _output(run: Path, out: str | None, default_name: str) -> Path:
    if out is not None:
        return Path(out)
    folder = run if (run / LAST).exists() or (run / "best").exists() else run.parent
    return folder / default_name


def _split(config: RunConfig, split: str, data_dir: str | None) -> tuple[Split, DataSplits]:
    data_config = config.data if data_dir is None else replace(config.data, data_dir=data_dir)
    data = load_data(data_config, progress=False)
    if tuple(data.shape) != tuple(config.model.data_shape):
        raise VaelabError(
            f"dataset {data.name} now has shape {data.shape} but the model was trained on "
            f"{config.model.data_shape}"
        )
    chosen = data.split(split)
    if len(chosen) == 0:
        raise VaelabError(f"the {split} split of {data.name} is empty; choose another --split")
    return chosen, data


def sample(
    run: Path, *, n: int = 64, seed: int = 0, out: str | None = None,
    checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """A grid of n decoded samples from the prior N(0, I)."""
    if n <= 0:
        raise VaelabError(f"--n must be positive, got {n}")
    model, _ = _load(run, checkpoint, device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.inference_mode():
        images = model.sample(n, generator=generator)
    return save_image_grid(images, _output(run, out, "samples.png"),
                           columns=max(1, round(math.sqrt(n))))  # fmt: skip


def reconstruct(
    run: Path, *, n: int = 10, split: str = "test", out: str | None = None,
    data_dir: str | None = None, checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """The first n images of a split (top row) above their reconstructions (bottom row)."""
    if n <= 0:
        raise VaelabError(f"--n must be positive, got {n}")
    model, config = _load(run, checkpoint, device)
    chosen, _ = _split(config, split, data_dir)
    x = chosen.x[:n].to(model.device)
    with torch.inference_mode():
        x_hat = model.reconstruct(x)
    return save_image_grid(torch.cat([x, x_hat]), _output(run, out, "reconstructions.png"),
                           columns=len(x))  # fmt: skip


def _endpoint(value: str | None, chosen: Split, shape: tuple[int, int, int]) -> torch.Tensor:
    if value is not None and not value.lstrip("-").isdigit():
        return load_image_file(value, shape)
    index = int(value) if value is not None else 0
    if not -len(chosen) <= index < len(chosen):
        raise VaelabError(f"index {index} is out of range: the split has {len(chosen)} images")
    return chosen.x[index]


def _default_end(chosen: Split, start: str | None) -> str:
    """The first image after the start whose class differs (or simply the next image)."""
    start_index = int(start) if start is not None and start.lstrip("-").isdigit() else 0
    if chosen.y is not None:
        others = torch.nonzero(chosen.y != chosen.y[start_index]).flatten()
        if len(others):
            return str(int(others[0]))
    return str((start_index + 1) % len(chosen))


def interpolate(
    run: Path, *, start: str | None, end: str | None, steps: int = 10, spherical: bool = False,
    split: str = "test", out: str | None = None, data_dir: str | None = None,
    checkpoint: str = "best", device: str = "cpu",
) -> Path:  # fmt: skip
    """A strip of `steps` decodings from the code of `start` to that of `end`.

    Each end is an index into the split or a path to an image file.
    """
    if steps < 2:
        raise VaelabError(f"--steps must be at least 2, got {steps}")
    model, config = _load(run, checkpoint, device)
    shape = tuple(config.model.data_shape)
    needs_data = any(v is None or v.lstrip("-").isdigit() for v in (start, end))
    chosen = _split(config, split, data_dir)[0] if needs_data else None
    if end is None:
        end = _default_end(chosen, start)
    x_a, x_b = (_endpoint(v, chosen, shape).to(model.device) for v in (start, end))
    with torch.inference_mode():
        frames = model.interpolate(x_a, x_b, steps, spherical=spherical)
    strip = torch.cat([x_a[None], frames, x_b[None]])  # originals at both ends
    return save_image_grid(strip, _output(run, out, "interpolation.png"), columns=len(strip))


def info(run: Path, *, as_json: bool = False) -> str:
    """A run's (or checkpoint's) configuration, size and last metrics, as text or JSON."""
    checkpoint = resolve_checkpoint(run)
    meta = read_meta(checkpoint)
    model, config, _ = load_checkpoint(checkpoint)
    history = read_metrics(run) if run.is_dir() else []
    report = {
        "checkpoint": str(checkpoint),
        "epoch": meta.get("epoch"),
        "parameters": count_parameters(model),
        "config": config.to_dict(),
        "last_metrics": history[-1] if history else meta.get("metrics", {}),
    }
    if as_json:
        return json.dumps(report, indent=2)
    lines = [f"checkpoint  {report['checkpoint']} (epoch {report['epoch']})",
             f"parameters  {report['parameters']:,}"]  # fmt: skip
    for section, values in report["config"].items():
        lines.append(f"[{section}]")
        lines += [f"  {key} = {value}" for key, value in values.items()]
    lines.append("last metrics")
    lines += [f"  {key} = {value:.6g}" if isinstance(value, float) else f"  {key} = {value}"
              for key, value in report["last_metrics"].items()]  # fmt: skip
    return "\n".join(lines)
