"""Every figure of a trained run, drawn from one split of its data: `draw_figures` returns
the figures of `vaelab.analysis.plots` by name (writing them is the caller's part)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from vaelab.analysis.figure_conditions import (
    grid_condition,
    pair_labels,
    sample_condition,
    split_labels,
)
from vaelab.analysis.latents import (
    PROJECTIONS,
    Plane,
    encode_dataset,
    latent_plane,
    project_2d,
)
from vaelab.analysis.plots import (
    interpolation_strips,
    latent_map,
    latent_traversals,
    manifold_grid,
    reconstructions_figure,
    samples_grid,
    training_curves,
)
from vaelab.errors import VaelabError
from vaelab.figures import spread_indices
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit
from vaelab.training.metrics import read_metrics

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
N_SAMPLES = 64
N_RECONSTRUCTIONS = 20
N_PAIRS = 4
INTERPOLATION_STEPS = 10


def draw_figures(
    loaded: RunSplit, *, projection: str = "pca", max_points: int = 5000, seed: int = 0
) -> dict[str, Figure]:
    """Every figure of FIGURES for a run and one split of its data (see `vaelab.runs.load_run`),
    by name; the training curves come from the run folder's metrics.jsonl.

    The latent map and the manifold share one plane, `latent_plane` of all the split's codes
    (the explorer's too), so a class lies in the same corner of both. A conditional run's
    figures are drawn with the conditions of `vaelab.analysis.figure_conditions`."""
    check_options(projection=projection, max_points=max_points)
    run = loaded.run
    model, value_range = run.model, run.value_range
    labels = split_labels(loaded)  # None but for a model conditional on labels
    codes = encode_dataset(model, loaded.x, y=labels)  # (N, D) posterior means, on the CPU
    plane = latent_plane(codes)
    generator = torch.Generator().manual_seed(seed)
    sample_generator = torch.Generator(device=model.device).manual_seed(seed)
    drawn_with, grid = sample_condition(loaded, N_SAMPLES, seed), grid_condition(loaded)
    with torch.inference_mode():
        samples = _samples(model, drawn_with.y, sample_generator).float().cpu()
        chosen = spread_indices(len(loaded.x), N_RECONSTRUCTIONS)
        x = loaded.x[chosen]
        x_in = x.to(model.device, model.dtype)
        if labels is None:
            x_hat = model.reconstruct(x_in).float().cpu()
        else:
            x_hat = model.reconstruct(x_in, labels[chosen].to(model.device)).float().cpu()
    pairs = choose_pairs(loaded.y, len(loaded.x), N_PAIRS, generator)
    names = loaded.class_names
    return {
        "latent_map": _latent_map(loaded, codes, plane, projection, max_points, generator, seed),
        "manifold": manifold_grid(
            model, codes, plane=plane, value_range=value_range, y=grid.y, condition=grid.words
        ),
        "samples": samples_grid(
            samples, title=_samples_title(model) + drawn_with.words, value_range=value_range
        ),
        "reconstructions": reconstructions_figure(
            x,
            x_hat,
            title=f"{len(x)} {loaded.split} images spread evenly over the split, above their "
            "reconstructions",
            value_range=value_range,
        ),
        "interpolations": interpolation_strips(
            model,
            [(loaded.x[i], loaded.x[j]) for i, j in pairs],
            steps=INTERPOLATION_STEPS,
            pair_names=_pair_names(loaded, pairs, names),
            value_range=value_range,
            labels=pair_labels(loaded, [a for a, _ in pairs]),
        ),
        "traversals": latent_traversals(
            model, codes, value_range=value_range, y=grid.y, condition=grid.words
        ),
        "curves": training_curves(
            read_metrics(run.records_dir), title=f"Training of {run.run_dir.name}"
        ),
    }


def figure_inputs(loaded: RunSplit, *, max_points: int = 5000) -> dict[str, str]:
    """What each figure of `draw_figures` is drawn from, by figure name, in words (for the
    report's summary): the counts `draw_figures` uses, from the same constants."""
    n, split = len(loaded.x), loaded.split
    images = f"{n:,} {split} images"
    shown = min(max_points, n)
    dim = loaded.run.config.model.latent_dim
    model = loaded.run.model
    prior = model.gaussian_prior
    if dim > 2:
        manifold = f"a grid over the principal axes of the codes of all {images}"
    elif prior:
        manifold = "the prior's quantiles (no images)"
    else:
        manifold = f"quantiles of the codes of all {images}"
    pairs = f"{N_PAIRS} random pairs of the {images}"
    return {
        "latent map": f"{shown:,} of {images} (a seeded random subset)"
        if shown < n
        else f"all {images}",
        "manifold": manifold,
        "samples": f"{N_SAMPLES} codes drawn from "
        + (model.require_prior().describe() if model.has_prior else "N(0, I)")
        + sample_condition(loaded, N_SAMPLES, 0).words,
        "reconstructions": f"{min(N_RECONSTRUCTIONS, n)} of {images}, spread evenly",
        "interpolations": pairs + (", of different classes" if loaded.y is not None else ""),
        "traversals": f"the mean and spread of the codes of all {images}",
        "curves": "metrics.jsonl",
    }


def check_options(*, projection: str = "pca", max_points: int = 5000) -> None:
    """Raise VaelabError for a projection or point budget `draw_figures` cannot use."""
    if projection not in PROJECTIONS:
        raise VaelabError(f"unknown projection '{projection}': use one of {', '.join(PROJECTIONS)}")
    if max_points < 2:
        raise VaelabError(f"max points must be at least 2, got {max_points}")


def _latent_map(
    loaded: RunSplit,
    codes: torch.Tensor,
    plane: Plane,
    projection: str,
    max_points: int,
    generator: torch.Generator,
    seed: int,
) -> Figure:
    """The scatter of a random subset of at most `max_points` codes, in random order so that
    no class is drawn entirely on top of the others; projected on `plane` (fitted on all the
    codes, not the subset) unless the projection is t-SNE."""
    keep = torch.randperm(len(codes), generator=generator)[:max_points]
    chosen = codes[keep]
    dim = codes.shape[1]
    what = "posterior means μ" if loaded.run.model.stochastic_encoder else "codes"
    if dim <= 2:
        points, labels = plane.project(chosen), ("$z_1$", "$z_2$" if dim == 2 else "")
        how = f"{dim}-D latent space"
    elif projection == "pca":
        points = plane.project(chosen)
        share = plane.scales.pow(2) / codes.var(dim=0).sum().clamp_min(1e-12)
        labels = tuple(f"principal axis {k + 1} ({share[k]:.0%} of variance)" for k in (0, 1))
        how = f"PCA of the {dim}-D codes of all {len(codes):,} images"
    else:
        points, labels = project_2d(chosen, "tsne", seed=seed), ("t-SNE 1", "t-SNE 2")
        how = f"t-SNE of the {dim}-D codes"
    y = None if loaded.y is None else loaded.y[keep]
    of = f"{len(chosen):,} of {len(codes):,}" if len(chosen) < len(codes) else f"all {len(codes):,}"
    title = f"Latent map: {what} of {of} {loaded.split} images\n{how}"
    return latent_map(
        points, y, loaded.class_names, title=title, xlabel=labels[0], ylabel=labels[1]
    )


def _samples(
    model: Autoencoder, y: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """N_SAMPLES decoded prior samples; a conditional model's drawn with the conditions y
    (as many samples as conditions)."""
    if y is None:
        return model.sample(N_SAMPLES, generator=generator)
    return model.sample(len(y), y=y.to(model.device), generator=generator)


def _samples_title(model: Autoencoder) -> str:
    if model.awaiting_prior:
        return f"Decoded codes drawn from the {model.require_prior().title}\nno prior fitted yet"
    if model.has_prior:
        return f"Samples from the prior: decoded z ~ {model.require_prior().describe()}"
    return "Decoded z ~ N(0, I)\nan autoencoder has no prior, so these need not look like data"


def choose_pairs(
    y: torch.Tensor | None, n: int, count: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """`count` random index pairs into n examples, of different classes where labels allow,
    else of different examples; a single example is paired with itself."""
    pairs = []
    everyone = torch.arange(n)
    for a in torch.randint(n, (count,), generator=generator).tolist():
        others = everyone if y is None else torch.nonzero(y != y[a]).flatten()
        if len(others) == 0:  # one class only
            others = everyone
        others = others[others != a]
        if len(others) == 0:  # one example only
            others = torch.tensor([a])
        b = int(others[torch.randint(len(others), (1,), generator=generator)])
        pairs.append((a, b))
    return pairs


def _pair_names(
    loaded: RunSplit, pairs: list[tuple[int, int]], names: tuple[str, ...] | None
) -> list[str]:
    if loaded.y is None:
        return [f"#{a} → #{b}" for a, b in pairs]
    label = [names[int(c)] if names else str(int(c)) for c in loaded.y.tolist()]
    return [f"{label[a]} → {label[b]}" for a, b in pairs]
