"""Priors over grids of discrete codes, p(z) for a VQ-VAE's (h, w) grid of codebook numbers.

Until a learned prior is fitted, a VQ-VAE's prior is uniform over the codebook at every
position, as during its training (van den Oord et al. 2017, section 3.1: the KL term is then
the constant h w log K). `vaelab train-prior` fits a gated PixelCNN (pixelcnn.py) instead.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn


class CodePrior(nn.Module):
    """p(z) (or p(z|y)) over index grids of shape (h, w) with values in [0, K)."""

    title: ClassVar[str] = "a prior over codes"

    def __init__(self, codebook_size: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.grid = tuple(grid)

    def log_prob_indices(self, indices: Tensor, *, y: Tensor | None = None) -> Tensor:
        """log p(z) summed over the grid, in nats: indices (B, h, w) -> (B,) float32."""
        raise NotImplementedError

    def sample_indices(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """n index grids z ~ p(z): (n, h, w) int64 on `device`, drawn with `generator` (which
        may be on another device: a CPU generator serves a model on a GPU)."""
        raise NotImplementedError

    def describe(self) -> str:
        """How reports and `vaelab eval` name this prior."""
        return self.title

    def kl_per_dim(self, posterior: object, *, y: Tensor | None = None) -> None:
        """None: a grid of discrete codes has no KL per latent dimension."""
        return None


class UniformCodePrior(CodePrior):
    """Every entry equally likely at every position: log p(z) = -h w log K. No parameters."""

    title = "uniform over the codebook"

    def describe(self) -> str:
        return f"{self.title} (the prior of training; fit one with vaelab train-prior RUN)"

    def log_prob_indices(self, indices: Tensor, *, y: Tensor | None = None) -> Tensor:
        value = -math.prod(self.grid) * math.log(self.codebook_size)
        return torch.full((len(indices),), value, device=indices.device)

    def sample_indices(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        shape = (n, *self.grid)
        drawn_on = generator.device if generator is not None else device
        indices = torch.randint(self.codebook_size, shape, generator=generator, device=drawn_on)
        return indices.to(device)
