"""Every figure of a run as PNG files: `plot_run(run)` loads the model and one split of its
data, draws the figures of `vaelab.analysis.plots` and writes them into RUN/plots/."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from vaelab.analysis.latents import PROJECTIONS, Plane, encode_dataset, project_2d
from vaelab.analysis.plots import (
    ValueRange,
    interpolation_strips,
    latent_map,
    latent_traversals,
    manifold_grid,
    reconstructions_figure,
    samples_grid,
    training_curves,
)
from vaelab.errors import VaelabError
from vaelab.files import make_private_temp_public
from vaelab.models import VAE, Autoencoder
from vaelab.training import RunConfig
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.metrics import read_metrics
from vaelab.training.runs import load_run_data, resolve_device

logger = logging.getLogger(__name__)

# The figures, in the order a report shows them; each is written as NAME.png.
FIGURES = (
    "latent_map",
    "manifold",
    "samples",
    "reconstructions",
    "interpolations",
    "traversals",
    "curves",
)
PLOTS_DIR = "plots"
N_SAMPLES = 64
N_RECONSTRUCTIONS = 20
N_PAIRS = 4
INTERPOLATION_STEPS = 10
SPLIT_ORDER = ("test", "val", "train")  # which split figures draw from when none is named


@dataclass(frozen=True)
class LoadedRun:
    """A run's model (eval mode), its configuration and checkpoint meta, and one data split."""

    run_dir: Path
    model: Autoencoder
    config: RunConfig
    meta: dict[str, Any]
    split: str
    x: torch.Tensor  # (N, C, H, W), on the CPU
    y: torch.Tensor | None  # (N,) class labels
    class_names: tuple[str, ...] | None

    @property
    def value_range(self) -> ValueRange | None:
        """The training data's (low, high), which figures map to black and white."""
        low_high = self.meta.get("data_range")
        return (float(low_high[0]), float(low_high[1])) if low_high else None


def run_folder(run: Path) -> Path:
    """The run folder of `run`, which may also be one of its checkpoint folders."""
    return run.parent if (run / "meta.json").is_file() else run


def load_run(
    run: str | Path,
    *,
    split: str | None = None,
    checkpoint: str = "best",
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
) -> LoadedRun:
    """Load a run's model (the `checkpoint` "best" or "last") and one split of its dataset,
    found through the run's saved data config, or `dataset` / `data_dir` if the data moved.

    `split` "train", "val" or "test" must not be empty; None takes the first non-empty one of
    test, val, train."""
    run = Path(run)
    if not run.exists():
        raise VaelabError(f"{run} does not exist; pass a run folder such as runs/digits-vae")
    model, config, meta = load_checkpoint(run, device=resolve_device(device), prefer=checkpoint)
    data = load_run_data(config, dataset, None if data_dir is None else str(data_dir))
    if split is None:  # the first non-empty split: a folder too small to hold out a test set
        split = next((name for name in SPLIT_ORDER if len(data.split(name))), "train")
        if split != "test":
            logger.info("the test split of %s is empty; drawing the %s split", data.name, split)
    chosen = data.split(split)
    if len(chosen) == 0:
        raise VaelabError(f"the {split} split of {data.name} is empty; choose another --split")
    return LoadedRun(
        run_folder(run), model, config, meta, split, chosen.x, chosen.y, data.class_names
    )


def draw_figures(
    loaded: LoadedRun, *, projection: str = "pca", max_points: int = 5000, seed: int = 0
) -> dict[str, Figure]:
    """Every figure of FIGURES for a loaded run, by name."""
    check_options(projection=projection, max_points=max_points)
    model, value_range = loaded.model, loaded.value_range
    codes = encode_dataset(model, loaded.x)  # (N, D) posterior means, on the CPU
    generator = torch.Generator().manual_seed(seed)
    sample_generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.inference_mode():
        samples = model.sample(N_SAMPLES, generator=sample_generator).float().cpu()
        x = loaded.x[:N_RECONSTRUCTIONS]
        x_hat = model.reconstruct(x.to(model.device, model.dtype)).float().cpu()
    pairs = choose_pairs(loaded.y, len(loaded.x), N_PAIRS, generator)
    names = loaded.class_names
    return {
        "latent_map": _latent_map(loaded, codes, projection, max_points, generator, seed),
        "manifold": manifold_grid(model, codes, value_range=value_range),
        "samples": samples_grid(samples, title=_samples_title(model), value_range=value_range),
        "reconstructions": reconstructions_figure(
            x,
            x_hat,
            title=f"{loaded.split} images above their reconstructions",
            value_range=value_range,
        ),
        "interpolations": interpolation_strips(
            model,
            [(loaded.x[i], loaded.x[j]) for i, j in pairs],
            steps=INTERPOLATION_STEPS,
            pair_names=_pair_names(loaded, pairs, names),
            value_range=value_range,
        ),
        "traversals": latent_traversals(model, codes, value_range=value_range),
        "curves": training_curves(
            read_metrics(loaded.run_dir), title=f"Training of {loaded.run_dir.name}"
        ),
    }


def check_options(*, projection: str = "pca", max_points: int = 5000) -> None:
    """Raise VaelabError for a projection or point budget `draw_figures` cannot use."""
    if projection not in PROJECTIONS:
        raise VaelabError(f"unknown projection '{projection}': use one of {', '.join(PROJECTIONS)}")
    if max_points < 2:
        raise VaelabError(f"max points must be at least 2, got {max_points}")


def _latent_map(
    loaded: LoadedRun,
    codes: torch.Tensor,
    projection: str,
    max_points: int,
    generator: torch.Generator,
    seed: int,
) -> Figure:
    """The scatter of a random subset of at most `max_points` codes, in random order so that
    no class is drawn entirely on top of the others."""
    keep = torch.randperm(len(codes), generator=generator)[:max_points]
    chosen = codes[keep]
    dim = codes.shape[1]
    what = "posterior means μ" if isinstance(loaded.model, VAE) else "codes"
    if dim <= 2:
        points, labels = project_2d(chosen, "pca"), ("$z_1$", "$z_2$" if dim == 2 else "")
        how = f"{dim}-D latent space"
    elif projection == "pca":
        plane = Plane.fit(chosen)
        points = plane.project(chosen)
        share = plane.scales.pow(2) / chosen.var(dim=0).sum().clamp_min(1e-12)
        labels = tuple(f"principal axis {k + 1} ({share[k]:.0%} of variance)" for k in (0, 1))
        how = f"PCA of the {dim}-D codes"
    else:
        points, labels = project_2d(chosen, "tsne", seed=seed), ("t-SNE 1", "t-SNE 2")
        how = f"t-SNE of the {dim}-D codes"
    y = None if loaded.y is None else loaded.y[keep]
    title = f"Latent map: {what} of {len(chosen)} {loaded.split} images\n{how}"
    return latent_map(
        points, y, loaded.class_names, title=title, xlabel=labels[0], ylabel=labels[1]
    )


def _samples_title(model: Autoencoder) -> str:
    if isinstance(model, VAE):
        return "Samples from the prior: decoded z ~ N(0, I)"
    return "Decoded z ~ N(0, I)\nan autoencoder has no prior, so these need not look like data"


def choose_pairs(
    y: torch.Tensor | None, n: int, count: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """`count` random index pairs into n examples, of different classes where labels allow."""
    pairs = []
    for a in torch.randint(n, (count,), generator=generator).tolist():
        others = torch.arange(n) if y is None else torch.nonzero(y != y[a]).flatten()
        others = others[others != a] if len(others) else torch.arange(n)
        b = int(others[torch.randint(len(others), (1,), generator=generator)])
        pairs.append((a, b))
    return pairs


def _pair_names(
    loaded: LoadedRun, pairs: list[tuple[int, int]], names: tuple[str, ...] | None
) -> list[str]:
    if loaded.y is None:
        return [f"#{a} → #{b}" for a, b in pairs]
    label = [names[int(c)] if names else str(int(c)) for c in loaded.y.tolist()]
    return [f"{label[a]} → {label[b]}" for a, b in pairs]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` through a temporary file beside it; return the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
        make_private_temp_public(Path(tmp))
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise VaelabError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    return path


def save_figures(figures: dict[str, Figure], out_dir: Path) -> list[Path]:
    """Write each figure as out_dir/NAME.png (creating out_dir); the paths, in FIGURES order."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaelabError(f"cannot create {out_dir}: {error.strerror or error}") from None
    return [save_figure(figures[name], out_dir / f"{name}.png") for name in FIGURES]


def plot_run(
    run: str | Path,
    out_dir: str | Path | None = None,
    *,
    projection: str = "pca",
    split: str | None = None,
    checkpoint: str = "best",
    max_points: int = 5000,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> list[Path]:
    """Draw every figure of a run into `out_dir` (default RUN/plots/) as NAME.png for NAME in
    FIGURES; return the paths. `projection` ("pca" or "tsne") flattens latent spaces of more
    than two dimensions for the latent map, which shows at most `max_points` codes. See
    `load_run` for `split`, `checkpoint`, `dataset`, `data_dir` and `device`."""
    check_options(projection=projection, max_points=max_points)
    loaded = load_run(
        run, split=split, checkpoint=checkpoint, dataset=dataset, data_dir=data_dir, device=device
    )
    figures = draw_figures(loaded, projection=projection, max_points=max_points, seed=seed)
    out = Path(out_dir) if out_dir is not None else loaded.run_dir / PLOTS_DIR
    paths = save_figures(figures, out)
    logger.info("wrote %d figures into %s", len(paths), out)
    return paths
