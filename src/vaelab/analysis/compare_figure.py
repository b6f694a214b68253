"""The comparison figure: one column per run, its latent map above grids of its samples."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from torch import Tensor

from vaelab.figures import mosaic, to_display


@dataclass(frozen=True)
class FigureColumn:
    """What one run contributes to the figure."""

    title: str
    points: Tensor  # (N, 2) test codes, projected to a plane
    labels: Tensor | None  # (N,) classes of those test images
    grids: dict[str, Tensor]  # sampler name -> decoded samples (n, C, H, W), in data space


def comparison_figure(
    columns: list[FigureColumn],
    *,
    data_range: tuple[float, float] | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Figure:
    """Row 1 the latent maps, then one row per sampler of sample grids; `data_range` maps to
    black and white (see `to_display`)."""
    samplers = list(columns[0].grids)
    figure = Figure(figsize=(3.4 * len(columns), 3.4 * (1 + len(samplers))), layout="constrained")
    axes = figure.subplots(1 + len(samplers), len(columns), squeeze=False)
    for index, column in enumerate(columns):
        _latent_map(axes[0, index], column, class_names if index == 0 else None)
        axes[0, index].set_title(column.title, fontsize=10)
        for row, sampler in enumerate(samplers, start=1):
            images = to_display(column.grids[sampler], value_range=data_range)
            per_row = max(1, round(math.sqrt(len(images))))
            rows = math.ceil(len(images) / per_row)
            grid = mosaic(images.float(), rows, per_row, border=0)  # (H, W) or (H, W, C)
            ax = axes[row, index]
            if grid.ndim == 2:
                ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(grid)
            ax.set_xticks([])
            ax.set_yticks([])
            if index == 0:
                ax.set_ylabel(SAMPLER_TITLES.get(sampler, sampler))
    return figure


SAMPLER_TITLES = {"prior": "samples, z ~ prior", "gmm": "samples, z ~ GMM of training codes"}


def _latent_map(ax: Any, column: FigureColumn, class_names: tuple[str, ...] | None) -> None:
    x, y = column.points[:, 0].numpy(), column.points[:, 1].numpy()
    if column.labels is None:
        ax.scatter(x, y, s=2, alpha=0.6, linewidths=0)
    else:
        scatter = ax.scatter(
            x,
            y,
            c=column.labels.numpy(),
            cmap="tab10",
            s=2,
            alpha=0.7,
            linewidths=0,
            vmin=-0.5,
            vmax=9.5,
        )
        if class_names is not None and len(class_names) <= 10:
            handles, _ = scatter.legend_elements(num=list(range(len(class_names))))
            ax.legend(handles, class_names, fontsize=6, markerscale=0.6, loc="best", ncols=2)
    ax.set_xlabel("latent map of test codes", fontsize=8)
    ax.tick_params(labelsize=7)
