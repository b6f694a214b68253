"""Figures of a model's disentanglement on data with known factors (`--dataset shapes`): the
latent x factor mutual-information heat map, and traversals of each latent labelled with the
factor it captures. `draw_factor_figures` scores a run's split and draws both."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.analysis.latents import decode_codes, encode_dataset
from vaelab.analysis.plots import (
    DECODE_BATCH,
    DPI,
    ValueRange,
    _image_figure,
    _show,
    _tile_centers,
    _title,
    tick_labels,
)
from vaelab.data import Factors
from vaelab.disentanglement.evaluate import (
    CAPTURE_THRESHOLD,
    DisentanglementResult,
    evaluate_disentanglement,
    sample_rows,
)
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit

logger = logging.getLogger(__name__)

# The figures, in the order the report shows them; each is written as NAME.png.
FACTOR_FIGURES = ("factor_mutual_info", "factor_traversals")
MAX_IMAGES = 10_000  # images scored for the report: a seeded random subset of a larger split
SPAN = 2.5  # a VAE's traversals move a latent ±SPAN (prior standard deviations) from the reference
QUANTILES = (0.05, 0.95)  # without a N(0, I) prior: from the 5% to the 95% quantile of the codes
MAX_ROWS = 16  # latents shown in the traversals; beyond, those holding most factor information


def mutual_info_heatmap(result: DisentanglementResult) -> Figure:
    """The share of each factor's entropy each latent holds, I(z_j; v_k) / H(v_k): latents
    z1..zD as rows, factors as columns, each cell annotated; titled with MIG, DCI
    disentanglement and the FactorVAE score."""
    shares = np.asarray(result.normalised_mutual_info, dtype=np.float64)  # (D, F)
    dims, count = shares.shape
    names = list(result.factors.names)
    fig = Figure(
        figsize=(min(16.0, 2.8 + 1.0 * count), min(20.0, 1.8 + 0.42 * dims)),
        dpi=DPI,
        layout="constrained",
    )
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    tilted = {"rotation": 30, "ha": "right"} if count > 6 else {}  # long rows of names
    ax.set_xticks(range(count), names, **tilted)
    ax.set_yticks(range(dims), [f"z{j + 1}" for j in range(dims)])
    ax.set_xlabel("factor $v_k$")
    ax.set_ylabel("latent $z_j$")
    if dims * count <= 600:  # beyond, the numbers would not fit their cells
        for (j, k), value in np.ndenumerate(shares):
            colour = "black" if value > 0.6 else "white"  # readable on viridis' yellow end too
            ax.text(k, j, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, label="$I(z_j; v_k) / H(v_k)$", shrink=0.9)
    scores = result.scores
    _title(
        fig,
        ax,
        "Mutual information of each latent with each factor, as a share of the factor's "
        f"entropy\nMIG {scores['mig']:.3f} · DCI disentanglement "
        f"{scores['dci_disentanglement']:.3f} · FactorVAE score {scores['factorvae_score']:.3f}",
    )
    return fig


def latent_labels(
    result: DisentanglementResult, *, threshold: float = CAPTURE_THRESHOLD
) -> list[str]:
    """Per latent, "z3 — x (0.71)": the factor it captures (see `captured_factors`) and the
    share of that factor's entropy it holds; "z5 — none" for a latent that captures none."""
    shares = np.asarray(result.normalised_mutual_info)
    names = list(result.factors.names)
    labels = []
    for j, captured in enumerate(result.captured_factors(threshold)):
        if captured is None:
            labels.append(f"z{j + 1} — none")
        else:
            labels.append(f"z{j + 1} — {captured} ({shares[j, names.index(captured)]:.2f})")
    return labels


def traversal_codes(
    z_reference: Tensor,
    dims: Tensor,
    *,
    steps: int,
    prior: bool,
    codes: Tensor | None = None,
    span: float = SPAN,
) -> Tensor:
    """z (len(dims) * steps, D), row by row: `z_reference` (D,) with latent d of `dims` moved
    along `steps` values, z_d ± `span` with a N(0, I) `prior`, else the quantiles QUANTILES of
    `codes[:, d]` (N, D), the codes of a dataset."""
    if not prior and (codes is None or len(codes) < 2):
        raise ValueError("traversals without a N(0, I) prior need the codes (N, D) of a dataset")
    z = z_reference.float().repeat(len(dims) * steps, 1)  # (R * steps, D)
    offsets = torch.linspace(-span, span, steps)
    p = torch.linspace(*QUANTILES, steps, dtype=torch.float64)
    for row, d in enumerate(dims.tolist()):
        values = (
            z_reference[d].float() + offsets
            if prior
            else torch.quantile(codes[:, d].double(), p).float()
        )
        z[row * steps : (row + 1) * steps, d] = values
    return z


def factor_traversals(
    model: Autoencoder,
    result: DisentanglementResult,
    x_reference: Tensor,
    *,
    codes: Tensor | None = None,
    steps: int = 9,
    span: float = SPAN,
    max_rows: int = MAX_ROWS,
    threshold: float = CAPTURE_THRESHOLD,
    value_range: ValueRange | None = None,
    reference_name: str = "a reference image",
) -> Figure:
    """One row per latent, in z order: decoded codes with that latent moved and the others at
    the code (posterior mean) of `x_reference` (C, H, W); each row labelled by `latent_labels`.

    A VAE's latent moves ±`span` around the reference's value (the prior's standard
    deviations: the middle column is the reference's reconstruction); a model without a
    N(0, I) prior needs `codes` (N, D), whose 5% to 95% quantiles it moves over. Past
    `max_rows` latents, only those holding the largest share of some factor are shown."""
    prior = model.gaussian_prior
    z_reference = encode_dataset(model, x_reference[None])[0]  # (D,)
    shares = np.asarray(result.normalised_mutual_info)
    dim = shares.shape[0]
    dims = torch.arange(dim)
    if dim > max_rows:  # the latents that hold most of some factor, kept in z order
        dims = torch.from_numpy(np.sort(np.argsort(-shares.max(axis=1), kind="stable")[:max_rows]))
    z = traversal_codes(z_reference, dims, steps=steps, prior=prior, codes=codes, span=span)
    images = decode_codes(model, z, batch_size=DECODE_BATCH)
    rows = len(dims)
    fig = _image_figure(rows, steps, extra=(2.4, 1.2))
    ax = fig.add_subplot()
    _show(ax, images, rows, steps, value_range)
    height, width = images.shape[-2:]
    labels = latent_labels(result, threshold=threshold)
    ax.set_yticks(_tile_centers(rows, height), [labels[d] for d in dims.tolist()], fontsize=8)
    if prior:
        ticks = tick_labels(torch.linspace(-span, span, steps), sign=True)
        ax.set_xlabel("offset of the latent from the reference's code (prior standard deviations)")
    else:
        ticks = [f"{q:.0%}" for q in torch.linspace(*QUANTILES, steps).tolist()]
        ax.set_xlabel("quantile of that latent's codes over the images")
    ax.set_xticks(_tile_centers(steps, width), ticks, fontsize=8)
    shown = f"the {rows} of {dim} latents holding most" if rows < dim else f"all {dim} latents"
    _title(
        fig,
        ax,
        f"{model.title} traversals of {shown}, around the code of {reference_name}; each "
        f"labelled with the factor it captures (share of the factor's entropy ≥ {threshold:g})",
    )
    return fig


@dataclass(frozen=True, eq=False)
class FactorFigures:
    """A run's disentanglement on (part of) one split, and the figures drawn from it."""

    result: DisentanglementResult
    figures: dict[str, Figure]  # by name, in FACTOR_FIGURES order
    split: str
    images: int  # the images scored: all of the split, or a seeded random MAX_IMAGES
    split_size: int
    reference: int  # index into the split of the traversals' reference image


def reference_index(factors: Tensor, info: Factors) -> int:
    """The image whose ordinal factors lie nearest their middle values (a mid-sized shape near
    the centre): the traversals' reference. factors (N, F) indices; the first such image."""
    ordinal = [k for k, categorical in enumerate(info.categorical) if not categorical]
    if not ordinal:
        return 0
    sizes = torch.tensor([info.sizes[k] for k in ordinal], dtype=torch.float64)
    distance = ((factors[:, ordinal].double() - (sizes - 1) / 2).abs() / sizes).sum(dim=1)
    return int(distance.argmin())


def draw_factor_figures(
    loaded: RunSplit, *, max_images: int = MAX_IMAGES, seed: int = 0
) -> FactorFigures | None:
    """Score the run on its split with `evaluate_disentanglement` (at most `max_images`, see
    `sample_rows`) and draw FACTOR_FIGURES; None for data without known factors."""
    if loaded.factors is None or loaded.factor_info is None:
        return None
    if len(loaded.factor_info.names) < 2:
        logger.warning(
            "no disentanglement figures: the metrics need 2 factors or more, and %s has one",
            loaded.dataset,
        )
        return None
    model = loaded.run.model
    chosen = sample_rows(len(loaded), max_images, seed=seed)
    x, factors = loaded.x[chosen], loaded.factors[chosen]
    result = evaluate_disentanglement(model, x, factors, loaded.factor_info, seed=seed)
    local = reference_index(factors, loaded.factor_info)
    index = int(chosen[local])
    codes = None if model.gaussian_prior else encode_dataset(model, x)
    figures = {
        "factor_mutual_info": mutual_info_heatmap(result),
        "factor_traversals": factor_traversals(
            model,
            result,
            x[local],
            codes=codes,
            value_range=loaded.run.value_range,
            reference_name=f"{loaded.split} image #{index}",
        ),
    }
    return FactorFigures(result, figures, loaded.split, len(chosen), len(loaded), index)
