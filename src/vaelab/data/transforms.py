"""Transforms applied to each batch as it is drawn, not to the stored data."""

from __future__ import annotations

import torch


def draw_binary(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A binary draw of images in [0, 1]: each value becomes 1 with probability x (the dynamic
    binarisation of MNIST, Salakhutdinov & Murray 2008; a fresh draw every time)."""
    return torch.bernoulli(x, generator=generator)
