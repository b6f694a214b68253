"""Image grids of a trained run as PNG files: prior samples, reconstructions, interpolation
strips; and the three of them `vaelab train` draws into a new run."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from vaelab.figures import save_image_grid, save_image_pairs, spread_indices
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit, TrainedRun, open_run

logger = logging.getLogger(__name__)

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
INTERPOLATION_PNG = "interpolation.png"
DEFAULT_RECONSTRUCTIONS = 10
RECONSTRUCTION_COLUMNS = 10  # pairs per row pair before wrapping


def save_grid(images: torch.Tensor, path: Path, value_range: tuple[float, float] | None) -> Path:
    """Images (N, C, H, W) as one row, or a square grid for more than 16 images."""
    columns = len(images) if len(images) <= 16 else max(1, round(math.sqrt(len(images))))
    return save_image_grid(images, path, columns=columns, value_range=value_range)


def save_reconstructions(trained: TrainedRun, x: torch.Tensor, n: int, path: Path) -> Path:
    """n images spread evenly over x (N, C, H, W), first and last included, above their
    reconstructions, 10 pairs a row."""
    x = x[spread_indices(len(x), n)]
    with torch.inference_mode():
        x_hat = trained.model.reconstruct(x.to(trained.model.device)).cpu()
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
    model: Autoencoder, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, spherical: bool = False
) -> torch.Tensor:
    """(steps + 2, C, H, W): the two originals at the ends, the decoded path between them."""
    x_a, x_b = x_a.to(model.device), x_b.to(model.device)
    frames = model.interpolate(x_a, x_b, steps, spherical=spherical)
    return torch.cat([x_a[None], frames, x_b[None]])


def default_end(chosen: RunSplit, start: int) -> int:
    """The next image after `start` of another class (or simply the next image)."""
    if chosen.y is not None:
        others = torch.nonzero(chosen.y != chosen.y[start]).flatten()
        if len(others):
            later = others[others > start]
            return int(later[0] if len(later) else others[0])
    return (start + 1) % len(chosen)


def standard_figures(run_dir: Path, *, seed: int = 0) -> list[Path]:
    """samples.png, reconstructions.png and interpolation.png of the best checkpoint.

    They show the test split, or val, then train, when it is empty: what `vaelab reconstruct`
    and `vaelab interpolate` show by default.
    """
    trained = open_run(run_dir, checkpoint="best", device="cpu")
    chosen = trained.choose_split()
    n = min(DEFAULT_RECONSTRUCTIONS, len(chosen))
    frames = interpolation_frames(trained.model, chosen.x[0], chosen.x[default_end(chosen, 0)], 10)
    return [
        save_grid(
            prior_samples(trained.model, 64, seed), run_dir / SAMPLES_PNG, trained.value_range
        ),
        save_reconstructions(trained, chosen.x, n, run_dir / RECONSTRUCTIONS_PNG),
        save_grid(frames, run_dir / INTERPOLATION_PNG, trained.value_range),
    ]
