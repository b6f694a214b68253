"""The comparison figure: one column per run, its latent map above grids of its samples."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor


@dataclass(frozen=True)
class FigureColumn:
    """What one run contributes to the figure."""

    title: str
    points: Tensor  # (N, 2) test codes, projected to a plane
    labels: Tensor | None  # (N,) classes of those test images
    grids: dict[str, Tensor]  # sampler name -> decoded samples (n, C, H, W), in data space


def tile(images: Tensor, columns: int, *, pad: int = 1) -> Tensor:
    """Images (n, C, H, W) in [0, 1] as one (rows*(H+pad)-pad, columns*(W+pad)-pad, C) array,
    on a white background."""
    n, channels, height, width = images.shape
    rows = math.ceil(n / columns)
    canvas = torch.ones(channels, rows * (height + pad) - pad, columns * (width + pad) - pad)
    for index, image in enumerate(images):
        top, left = (index // columns) * (height + pad), (index % columns) * (width + pad)
        canvas[:, top : top + height, left : left + width] = image
    return canvas.permute(1, 2, 0)


def draw_comparison(
    columns: list[FigureColumn],
    path: Path,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Write the figure to `path` (PNG): row 1 the latent maps, then one row per sampler."""
    samplers = list(columns[0].grids)
    figure = Figure(figsize=(3.4 * len(columns), 3.4 * (1 + len(samplers))), layout="constrained")
    axes = figure.subplots(1 + len(samplers), len(columns), squeeze=False)
    low, high = data_range
    for index, column in enumerate(columns):
        _latent_map(axes[0, index], column, class_names if index == 0 else None)
        axes[0, index].set_title(column.title, fontsize=10)
        for row, sampler in enumerate(samplers, start=1):
            images = ((column.grids[sampler] - low) / max(high - low, 1e-12)).clamp(0, 1)
            grid = tile(images.float(), columns=max(1, round(math.sqrt(len(images)))))
            ax = axes[row, index]
            if grid.shape[2] == 1:
                ax.imshow(grid[:, :, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(grid.numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if index == 0:
                ax.set_ylabel(SAMPLER_TITLES.get(sampler, sampler))
    figure.savefig(path, dpi=100)
    return path


SAMPLER_TITLES = {"prior": "samples, z ~ N(0, I)", "gmm": "samples, z ~ GMM of training codes"}


def _latent_map(ax, column: FigureColumn, class_names: tuple[str, ...] | None) -> None:
    x, y = column.points[:, 0].numpy(), column.points[:, 1].numpy()
    if column.labels is None:
        ax.scatter(x, y, s=2, alpha=0.6, linewidths=0)
    else:
        scatter = ax.scatter(x, y, c=column.labels.numpy(), cmap="tab10", s=2, alpha=0.7,
                             linewidths=0, vmin=-0.5, vmax=9.5)  # fmt: skip
        if class_names is not None and len(class_names) <= 10:
            handles, _ = scatter.legend_elements(num=list(range(len(class_names))))
            ax.legend(handles, class_names, fontsize=6, markerscale=0.6, loc="best", ncols=2)
    ax.set_xlabel("latent map of test codes", fontsize=8)
    ax.tick_params(labelsize=7)
