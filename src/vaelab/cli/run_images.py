"""Image grids of a trained run as PNG files: prior samples, reconstructions, interpolation
strips; and the three of them `vaelab train` draws into a new run.

A conditional run's samples are a grid with one row per class (a cvae or m2 on labels), or
completions of the split's images (a cvae trained with --observe); its reconstructions and
interpolations pass the images' labels."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from vaelab.analysis.conditional_figures import class_grid, completes_images, completion_grid
from vaelab.errors import VaelabError
from vaelab.figures import save_image_grid, save_image_pairs, spread_indices
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit, TrainedRun, ValueRange, open_run

logger = logging.getLogger(__name__)

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
INTERPOLATION_PNG = "interpolation.png"
DEFAULT_RECONSTRUCTIONS = 10
RECONSTRUCTION_COLUMNS = 10  # pairs per row pair before wrapping
DEFAULT_SAMPLES = 64
# A conditional run's samples: 8 per class, or rows of an observed part and 7 completions.
SAMPLE_COLUMNS = 8


def save_grid(images: torch.Tensor, path: Path, value_range: tuple[float, float] | None) -> Path:
    """Images (N, C, H, W) as one row, or a square grid for more than 16 images."""
    columns = len(images) if len(images) <= 16 else max(1, round(math.sqrt(len(images))))
    return save_image_grid(images, path, columns=columns, value_range=value_range)


def save_reconstructions(
    trained: TrainedRun, x: torch.Tensor, n: int, path: Path, *, y: torch.Tensor | None = None
) -> Path:
    """n images spread evenly over x (N, C, H, W), first and last included, above their
    reconstructions, 10 pairs a row. A model conditional on labels is given theirs, y (N,)
    (an m2 infers them without)."""
    chosen = spread_indices(len(x), n)
    x = x[chosen]
    model = trained.model
    labels = y[chosen].to(model.device) if model.needs_labels and y is not None else None
    with torch.inference_mode():
        x_hat = model.reconstruct(x.to(model.device), labels).cpu()
    return save_image_pairs(
        x, x_hat, path, columns=RECONSTRUCTION_COLUMNS, value_range=trained.value_range
    )


@torch.inference_mode()
def prior_samples(model: Autoencoder, n: int, seed: int) -> torch.Tensor:
    """n images decoded from the prior, (n, C, H, W); a model without one decodes N(0, I)."""
    if not model.has_prior:
        logger.info(
            "note: the %s model has no prior; its samples decode z ~ N(0, I) and may not look "
            "like the data",
            model.config.model,
        )
    if model.awaiting_prior:
        logger.info(
            "note: the %s has no fitted prior yet; its samples decode codes drawn uniformly "
            "and will not look like the data: fit one with vaelab train-prior RUN",
            model.title,
        )
    generator = torch.Generator(device=model.device).manual_seed(seed)
    return model.sample(n, generator=generator)


@torch.inference_mode()
def interpolation_frames(
    model: Autoencoder,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    steps: int,
    spherical: bool = False,
    *,
    label: int | None = None,
) -> torch.Tensor:
    """(steps + 2, C, H, W): the two originals at the ends, the decoded path between them.

    A model conditional on labels decodes the whole path with `label`, x_a's (an m2's
    classifier infers it where it is None); a cvae trained with --observe keeps x_a's observed
    part."""
    x_a, x_b = x_a.to(model.device), x_b.to(model.device)
    if not model.needs_labels:
        frames = model.interpolate(x_a, x_b, steps, spherical=spherical)
        return torch.cat([x_a[None], frames, x_b[None]])
    if label is None and model.classifies:
        label = int(model.classify(x_a[None]).argmax())
    if label is None:
        raise VaelabError(
            "this run is conditional on a class label: interpolate from an image of the "
            "dataset (an index), whose label it decodes with"
        )
    y = torch.tensor(label, device=model.device)
    frames = model.interpolate(x_a, x_b, steps, spherical=spherical, y=y)
    return torch.cat([x_a[None], frames, x_b[None]])


def per_class_count(n: int, classes: int) -> int:
    """Samples per class for about n in all: n / K rounded to the nearest whole number (halves
    up), at least 1."""
    return max(1, (2 * n + classes) // (2 * classes))


def middle(value_range: ValueRange | None) -> float:
    """The value figures show as mid-grey: the middle of the data's range, else 0.5."""
    return 0.5 if value_range is None else (value_range[0] + value_range[1]) / 2


def save_samples(
    trained: TrainedRun,
    path: Path,
    *,
    n: int | None = None,
    seed: int = 0,
    chosen: RunSplit | None = None,
) -> Path:
    """A run's samples as a PNG: n (default 64) decoded from the prior in a square grid; for a
    run conditional on labels, a row per class of n / K (default 8); for a cvae trained with
    --observe, rows of 8 spread over `chosen`'s images (about n / 8 rows, default 8): the
    observed part, then 7 completions."""
    model = trained.model
    if model.needs_labels:
        per_class = SAMPLE_COLUMNS if n is None else per_class_count(n, model.classes)
        images = class_grid(model, per_class, seed=seed)
        return save_image_grid(images, path, columns=per_class, value_range=trained.value_range)
    if completes_images(model):
        if chosen is None:
            raise ValueError("a cvae trained with --observe completes images: pass chosen")
        rows = SAMPLE_COLUMNS if n is None else per_class_count(n, SAMPLE_COLUMNS)
        x = chosen.x[spread_indices(len(chosen), rows)]
        images = completion_grid(
            model, x, SAMPLE_COLUMNS - 1, seed=seed, fill=middle(trained.value_range)
        )
        return save_image_grid(
            images, path, columns=SAMPLE_COLUMNS, value_range=trained.value_range
        )
    count = DEFAULT_SAMPLES if n is None else n
    return save_grid(prior_samples(model, count, seed), path, trained.value_range)


def default_end(chosen: RunSplit, start: int) -> int:
    """The next image after `start` of another class (or simply the next image)."""
    if chosen.y is not None:
        others = torch.nonzero(chosen.y != chosen.y[start]).flatten()
        if len(others):
            later = others[others > start]
            return int(later[0] if len(later) else others[0])
    return (start + 1) % len(chosen)


def standard_figures(run_dir: Path, *, seed: int = 0) -> list[Path]:
    """samples.png, reconstructions.png and interpolation.png of the checkpoint `open_run` picks.

    They show the test split, or val, then train, when it is empty: what `vaelab reconstruct`
    and `vaelab interpolate` show by default.
    """
    trained = open_run(run_dir, device="cpu")
    chosen = trained.choose_split()
    n = min(DEFAULT_RECONSTRUCTIONS, len(chosen))
    label = None if chosen.y is None or chosen.y[0] < 0 else int(chosen.y[0])
    frames = interpolation_frames(
        trained.model, chosen.x[0], chosen.x[default_end(chosen, 0)], 10, label=label
    )
    return [
        save_samples(trained, run_dir / SAMPLES_PNG, seed=seed, chosen=chosen),
        save_reconstructions(trained, chosen.x, n, run_dir / RECONSTRUCTIONS_PNG, y=chosen.y),
        save_grid(frames, run_dir / INTERPOLATION_PNG, trained.value_range),
    ]
