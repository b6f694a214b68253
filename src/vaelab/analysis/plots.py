"""Figures of a trained model: one small function per figure, each returning a matplotlib Figure.

They take tensors (and the model where they must decode) and touch no files and no pyplot
state; `vaelab.analysis.run_figures.draw_figures` draws them all for a run. Images are tiled
into one mosaic per panel (one `imshow`), so a 15x15 grid is one image, not 225 axes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from vaelab.analysis.grids import SPAN, manifold_latents, most_active, traversal_latents
from vaelab.analysis.latents import Plane, decode_codes
from vaelab.figures import mosaic, to_display
from vaelab.models import Autoencoder

DPI = 120
CELL_INCHES = 0.55  # one image tile: 8x8 digits become 66-pixel tiles at DPI
DECODE_BATCH = 256

ValueRange = tuple[float, float]


# --- images -------------------------------------------------------------------------------


def _tile_centers(count: int, size: int, pad: int = 1) -> list[float]:
    """Pixel coordinates of the centres of `count` tiles of `size` pixels along one axis."""
    return [pad + i * (size + pad) + (size - 1) / 2 for i in range(count)]


def _show(ax: Any, images: Tensor, rows: int, cols: int, value_range: ValueRange | None) -> None:
    """Draw images (N, C, H, W) as one mosaic on `ax`, gray for one channel, RGB for three."""
    array = mosaic(to_display(images, value_range=value_range), rows, cols)
    ax.imshow(
        array, cmap="gray" if array.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def tick_labels(values: Tensor, *, sign: bool = False) -> list[str]:
    """Tick labels to 2 significant digits, or more where 2 would give two different ticks
    the same label, with float noise around zero shown as 0.

    An even grid computed in float32 puts its middle value near 0 rather than at it (e.g.
    -1.2e-07, or Φ⁻¹(0.5) = -2.8e-16); a value smaller than 1e-6 of the largest is taken as 0.
    """
    array = values.double().flatten()
    tiny = 1e-6 * float(array.abs().max()) if len(array) else 0.0
    values_list = torch.where(array.abs() <= tiny, torch.zeros_like(array), array).tolist()
    for digits in range(2, 7):
        form = f"{{:{'+' if sign else ''}.{digits}g}}"
        labels = ["0" if v == 0 else form.format(v) for v in values_list]
        if len(set(labels)) == len(set(values_list)):
            break
    return labels


def _image_figure(rows: int, cols: int, *, extra: tuple[float, float] = (0.6, 0.9)) -> Figure:
    """A figure sized for a rows x cols mosaic plus margins `extra` (width, height) in inches."""
    width = min(16.0, max(4.0, cols * CELL_INCHES + extra[0]))
    height = min(20.0, max(2.0, rows * CELL_INCHES + extra[1]))
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _title(fig: Figure, ax: Any, text: str) -> None:
    """A title wrapped to the figure's width, so a small figure's long title stays whole."""
    width = max(20, int(fig.get_figwidth() * 12))  # characters at 10 pt per line, roughly
    lines = [textwrap.fill(line, width) for line in text.splitlines()]
    ax.set_title("\n".join(lines), fontsize=10)


# --- the latent map -----------------------------------------------------------------------


def latent_map(
    points: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    *,
    title: str,
    xlabel: str = "$z_1$",
    ylabel: str = "$z_2$",
) -> Figure:
    """A scatter of 2-D points (N, 2), coloured by integer class `labels` (N,) with a legend."""
    points = np.asarray(points, dtype=np.float64)
    fig = Figure(figsize=(7.5, 6.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    size = 6 if len(points) > 2000 else 12
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, linewidths=0)
    else:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        palette = _palette(len(classes))
        for colour, label in zip(palette, classes, strict=True):
            chosen = labels == label
            name = class_names[label] if class_names and 0 <= label < len(class_names) else label
            ax.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=size,
                alpha=0.7,
                linewidths=0,
                color=colour,
                label=str(name),
            )
        legend = ax.legend(
            title="class",
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            markerscale=2.5,
            frameon=False,
            ncols=1 if len(classes) <= 20 else 2,
        )
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)
    return fig


def _palette(n: int) -> list[Any]:
    """n distinct colours: tab10 up to 10 classes, tab20 up to 20, then a continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)]


# --- the manifold grid --------------------------------------------------------------------


def manifold_grid(
    model: Autoencoder,
    codes: Tensor | None = None,
    *,
    n: int = 15,
    plane: Plane | None = None,
    value_range: ValueRange | None = None,
    y: Tensor | None = None,
    condition: str = "",
) -> Figure:
    """Images decoded on a grid of codes (see `manifold_latents`): quantiles for D <= 2, an
    even grid over `plane`'s principal axes for D > 2. `codes` (N, D) of a dataset are needed
    unless the model is a VAE with D <= 2 or, for D > 2, `plane` is given. A conditional
    model decodes them all with the condition y (see `decode_codes`), `condition` in words."""
    dim = model.config.latent_dim
    grid = manifold_latents(dim, codes, prior=model.gaussian_prior, n=n, plane=plane)
    images = decode_codes(model, grid.z, y=y, batch_size=DECODE_BATCH)
    fig = _image_figure(grid.rows, grid.cols, extra=(1.2, 1.4))
    ax = fig.add_subplot()
    _show(ax, images, grid.rows, grid.cols, value_range)
    _, _, height, width = images.shape
    every = max(1, grid.cols // 8)  # at most ~8 tick labels per axis stay readable
    xs = _tile_centers(grid.cols, width)
    ax.set_xticks(xs[::every], tick_labels(grid.x_values)[::every])
    if grid.rows > 1:
        ys = _tile_centers(grid.rows, height)
        ax.set_yticks(ys[::every], tick_labels(grid.y_values)[::every])
    ax.set_xlabel(grid.xlabel)
    ax.set_ylabel(grid.ylabel)
    title = f"{model.title} manifold: {grid.rows}x{grid.cols} decoded codes{condition}"
    _title(fig, ax, f"{title}\n{grid.note}")
    return fig


# --- samples, reconstructions, interpolations, traversals ---------------------------------


def samples_grid(
    images: Tensor, *, title: str, cols: int | None = None, value_range: ValueRange | None = None
) -> Figure:
    """Images (N, C, H, W), e.g. decoded prior samples, as one grid (square by default)."""
    cols = cols or max(1, int(np.ceil(np.sqrt(len(images)))))
    rows = max(1, -(-len(images) // cols))
    fig = _image_figure(rows, cols)
    ax = fig.add_subplot()
    _show(ax, images, rows, cols, value_range)
    _title(fig, ax, title)
    return fig


def reconstructions_figure(
    x: Tensor,
    x_hat: Tensor,
    *,
    cols: int = 10,
    title: str = "Reconstructions",
    value_range: ValueRange | None = None,
) -> Figure:
    """Originals x (N, C, H, W) with their reconstructions x_hat right below, `cols` per row."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape")
    cols = max(1, min(cols, len(x)))
    row_pairs = -(-len(x) // cols)
    # Scaled together, as `vaelab reconstruct` does: without a value range both share one scale.
    shown = to_display(torch.cat([x, x_hat]), value_range=value_range)
    x, x_hat = shown[: len(x)], shown[len(x) :]
    tiles = torch.ones(row_pairs * 2 * cols, *x.shape[1:])  # cells left over stay white
    for i in range(len(x)):
        top = (i // cols) * 2 * cols + i % cols  # pair i: one column, two adjacent rows
        tiles[top], tiles[top + cols] = x[i], x_hat[i]
    fig = _image_figure(2 * row_pairs, cols, extra=(1.6, 0.6))
    ax = fig.add_subplot()
    _show(ax, tiles, 2 * row_pairs, cols, (0.0, 1.0))
    ax.set_yticks(
        _tile_centers(2 * row_pairs, x.shape[-2]), ["original", "reconstruction"] * row_pairs
    )
    _title(fig, ax, title)
    return fig


def interpolation_strips(
    model: Autoencoder,
    pairs: Sequence[tuple[Tensor, Tensor]],
    *,
    steps: int = 10,
    spherical: bool | None = None,
    pair_names: Sequence[str] | None = None,
    value_range: ValueRange | None = None,
    labels: Sequence[Tensor] | None = None,
) -> Figure:
    """One strip per pair (x_a, x_b), each (C, H, W): x_a, `steps` decodings along the path
    between their codes, x_b. Paths are linear, plus spherical (slerp, White 2016) when
    `spherical` is True or, by default, for a VAE, whose codes live near the prior's shell.
    A model conditional on labels decodes pair k's path with labels[k] (a 0-d tensor)."""
    spherical = model.gaussian_prior if spherical is None else spherical
    modes = [False, True] if spherical else [False]
    strips, names = [], []
    with torch.inference_mode():
        for k, (x_a, x_b) in enumerate(pairs):
            x_a, x_b = x_a.to(model.device, model.dtype), x_b.to(model.device, model.dtype)
            for slerp in modes:
                if labels is None:
                    path = model.interpolate(x_a, x_b, steps, spherical=slerp)
                else:
                    path = model.interpolate(x_a, x_b, steps, spherical=slerp, y=labels[k])
                strips.append(torch.cat([x_a[None], path, x_b[None]]).float().cpu())
                pair = pair_names[k] if pair_names else f"pair {k + 1}"
                names.append(f"{pair}\n{'spherical' if slerp else 'linear'}")
    rows, cols = len(strips), steps + 2
    fig = _image_figure(rows, cols, extra=(1.6, 1.1))
    ax = fig.add_subplot()
    _show(ax, torch.cat(strips), rows, cols, value_range)
    height, width = strips[0].shape[-2:]
    t = tick_labels(torch.linspace(0, 1, steps))
    ax.set_xticks(_tile_centers(cols, width), ["$x_a$", *t, "$x_b$"], fontsize=8)
    ax.set_yticks(_tile_centers(rows, height), names, fontsize=8)
    ax.set_xlabel("t along the path from code($x_a$) to code($x_b$)")
    _title(fig, ax, f"{model.title} interpolations between {len(pairs)} pairs of images")
    return fig


def latent_traversals(
    model: Autoencoder,
    codes: Tensor,
    *,
    steps: int = 9,
    max_dims: int = 16,
    value_range: ValueRange | None = None,
    y: Tensor | None = None,
    condition: str = "",
) -> Figure:
    """One row per latent dimension: decoded codes moved along it from -2 to +2 standard
    deviations of `codes` (N, D), the other dimensions at their mean. Past `max_dims`
    dimensions, only the most active (largest variance over the data) are shown. A
    conditional model decodes them with the condition y, `condition` in words (see
    `manifold_grid`). A hierarchical model's rows move its top layer's dimensions, the layers
    below at the means of p(z_l | z_{l+1}) (`codes_from_top`)."""
    hierarchical = model.top_layer_dim < model.config.latent_dim
    codes = codes[:, -model.top_layer_dim :]  # a hierarchy's top layer; else all of it
    center = codes.float().mean(dim=0)
    scales = codes.float().std(dim=0, correction=int(len(codes) > 1))  # one code: spread 0
    dims = most_active(codes, max_dims)
    z = traversal_latents(center, scales, dims, steps)
    with torch.inference_mode():
        z = model.codes_from_top(z.to(model.device, model.dtype))
    images = decode_codes(model, z, y=y, batch_size=DECODE_BATCH)
    rows, dim = len(dims), codes.shape[1]
    fig = _image_figure(rows, steps, extra=(1.8, 1.1))
    ax = fig.add_subplot()
    _show(ax, images, rows, steps, value_range)
    height, width = images.shape[-2:]
    layer = f"{len(model.config.latent_dims)}," if hierarchical else ""  # z_{L,d}: layer L's
    names = [f"$z_{{{layer}{d + 1}}}$ (std {scales[d]:.2g})" for d in dims.tolist()]
    ax.set_yticks(_tile_centers(rows, height), names, fontsize=8)
    t = tick_labels(torch.linspace(-SPAN, SPAN, steps), sign=True)
    ax.set_xticks(_tile_centers(steps, width), t, fontsize=8)
    ax.set_xlabel("offset from the mean code, in standard deviations of that dimension")
    shown = f"the {rows} most active of {dim} dimensions" if rows < dim else f"all {dim} dimensions"
    if hierarchical:
        shown += " of the top layer, the layers below at their conditional means"
    _title(fig, ax, f"{model.title} latent traversals: {shown}{condition}")
    return fig


# --- training curves ----------------------------------------------------------------------

CURVES = (("loss", "loss (negative ELBO for a VAE)"), ("recon", "reconstruction"), ("kl", "KL"))
# Autoscaled, a flat curve fills its panel: ±0.3 nats of epoch-to-epoch noise on a KL of 6 would
# look like instability. So each panel spans at least MIN_SPAN_NATS or MIN_SPAN_SHARE of its
# largest value, whichever is more, and the KL panel (KL >= 0) starts at 0.
MIN_SPAN_NATS = 2.0
MIN_SPAN_SHARE = 0.1


def curve_limits(values: Sequence[float], *, from_zero: bool = False) -> tuple[float, float]:
    """The y-range of a training-curve panel showing `values`, with a 5% margin: at least
    MIN_SPAN_NATS or MIN_SPAN_SHARE of the largest magnitude wide, and from 0 if `from_zero`."""
    finite = [float(v) for v in values if math.isfinite(v)] or [0.0]
    low, high = min(finite), max(finite)
    if from_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    span = max(high - low, MIN_SPAN_NATS, MIN_SPAN_SHARE * max(abs(low), abs(high)))
    floor = from_zero and low == 0.0  # the axis starts at 0 and grows upwards only
    middle = span / 2 if floor else (low + high) / 2
    low, high = middle - span / 2, middle + span / 2
    margin = 0.05 * span
    return (low if floor else low - margin, high + margin)


def training_curves(records: Sequence[Mapping[str, Any]], *, title: str = "Training") -> Figure:
    """Loss, reconstruction and KL per epoch, train and validation, from metrics records
    (dicts with "epoch" and "train/loss", "val/loss", ...; the last record of an epoch wins)."""
    by_epoch = {r["epoch"]: r for r in records if isinstance(r.get("epoch"), int | float)}
    epochs = sorted(by_epoch)
    fig = Figure(figsize=(12.0, 3.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(CURVES))
    for ax, (term, name) in zip(axes, CURVES, strict=True):
        shown: list[float] = []
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}/{term}"
            xs = [e for e in epochs if isinstance(by_epoch[e].get(key), int | float)]
            shown += [float(by_epoch[e][key]) for e in xs]
            if xs:
                ax.plot(
                    xs,
                    [by_epoch[e][key] for e in xs],
                    style,
                    marker="o",
                    markersize=3,
                    label="validation" if split == "val" else "train",
                )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no tick at epoch 1.5
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.25)
        if ax.has_data():
            ax.legend(frameon=False)
            ax.set_ylim(*curve_limits(shown, from_zero=term == "kl"))
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    return fig
