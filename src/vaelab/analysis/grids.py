"""Which codes the grid figures decode: the manifold grid and the latent traversals.

Pure functions of the codes (N, D) of a dataset; `vaelab.analysis.plots` decodes and draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.analysis.latents import Plane

PROBABILITIES = (0.05, 0.95)  # Kingma & Welling 2013, fig. 4: z = Φ⁻¹(p) on an even grid of p
SPAN = 2.0  # grids over principal axes and traversals reach ±SPAN standard deviations


@dataclass(frozen=True)
class LatentGrid:
    """Codes to decode on a grid: z (rows * cols, D), row by row, the top row first."""

    z: Tensor
    rows: int
    cols: int
    x_values: Tensor  # (cols,) the coordinate of each column on the horizontal axis
    y_values: Tensor  # (rows,) the coordinate of each row on the vertical axis, top first
    xlabel: str
    ylabel: str
    note: str  # how the grid was chosen, for the title


def manifold_latents(
    latent_dim: int,
    codes: Tensor | None = None,
    *,
    prior: bool,
    n: int = 15,
    plane: Plane | None = None,
) -> LatentGrid:
    """The codes of the manifold figure.

    With a prior (a VAE) and D <= 2: z = Φ⁻¹(p) for p on an even grid in [0.05, 0.95], the
    unit Gaussian's quantiles (Kingma & Welling 2013, fig. 4). Without one (an autoencoder),
    the same quantiles of the codes' own marginals. For D > 2: an even grid over the first two
    principal axes, ±2 standard deviations, other directions at the mean; the axes are
    `plane`'s (the latent map's, so both figures agree), else fitted to `codes` (N, D).
    """
    if n < 2:
        raise ValueError(f"a manifold grid needs n >= 2, got {n}")
    p = torch.linspace(*PROBABILITIES, n, dtype=torch.float64)
    needs_codes = (latent_dim > 2 and plane is None) or (latent_dim <= 2 and not prior)
    if needs_codes and (codes is None or len(codes) < 2):
        raise ValueError("this manifold grid needs the codes (N, D) of at least two examples")
    if latent_dim > 2:
        plane = plane if plane is not None else Plane.fit(codes)
        steps = torch.linspace(-SPAN, SPAN, n)
        xs, ys = steps * plane.scales[0], steps.flip(0) * plane.scales[1]
        labels = [f"principal axis {k} (±{SPAN:g} std)" for k in (1, 2)]
        note = (
            f"grid over the codes' first two principal axes; the other {latent_dim - 2} at the mean"
        )
        return LatentGrid(plane.lift(_grid_points(xs, ys)), n, n, xs, ys, *labels, note)
    if prior:
        values = [torch.special.ndtri(p).float()] * latent_dim
        note = "z on the prior's quantiles $\\Phi^{-1}(p)$, p = 0.05 … 0.95 (Kingma & Welling 2013)"
    else:
        values = [torch.quantile(codes[:, k].double(), p).float() for k in range(latent_dim)]
        note = "an autoencoder has no prior: z on the quantiles 5% … 95% of its own codes"
    xs = values[0]
    ys = values[1].flip(0) if latent_dim == 2 else torch.zeros(0)
    if latent_dim == 1:
        return LatentGrid(xs[:, None], 1, n, xs, ys, "$z_1$", "", note)
    return LatentGrid(_grid_points(xs, ys), n, n, xs, ys, "$z_1$", "$z_2$", note)


def _grid_points(xs: Tensor, ys: Tensor) -> Tensor:
    """(len(ys) * len(xs), 2) points (x, y), row by row: row i holds y = ys[i]."""
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (rows, cols) each
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def most_active(codes: Tensor, k: int) -> Tensor:
    """The k latent dimensions whose codes vary most over the data (cf. the active units of
    Burda et al. 2016, Cov_x E_q[z]), in descending order of variance: (min(k, D),)."""
    variance = codes.float().var(dim=0, correction=int(len(codes) > 1))  # one code: 0
    return variance.argsort(descending=True)[:k]


def traversal_latents(center: Tensor, scales: Tensor, dims: Tensor, steps: int) -> Tensor:
    """z (len(dims) * steps, D): for each dimension d in `dims`, `center` with z_d moved from
    -2 to +2 `scales[d]` in `steps` even steps; row by row."""
    t = torch.linspace(-SPAN, SPAN, steps)
    z = center.float().repeat(len(dims) * steps, 1)  # (R * steps, D)
    for row, d in enumerate(dims.tolist()):
        z[row * steps : (row + 1) * steps, d] += t * scales[d]
    return z
