"""Autoregressive decoder terms: p(x|z) = prod_j p(x_j | z, x_<j) in raster order.

A factorised decoder must explain every pixel from z alone, so neighbouring pixels of a stroke
are independent given z, which costs nats. Adding a term that sees the pixels before x_j (a
fully visible sigmoid belief net, Frey 1998; the role PixelCNN layers play in PixelVAE,
Gulrajani et al. 2016) lets z carry the global shape and the context the local detail:

    logits_j = decoder(z)_j + context(x)_j,   context(x)_j depends on x_<j only.

Training and likelihood evaluation see the real x (teacher forcing: one pass); decoding a z
without x (samples, interpolations) fills the pixels one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


class LinearContext(nn.Module):
    """context(x)_j = sum_{i < j} A_ji x_i: a strictly lower-triangular linear map over the
    flattened (C, H, W) values. Starts at zero, so training begins as a factorised decoder."""

    def __init__(self, n_values: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_values, n_values))
        self.register_buffer("mask", torch.ones(n_values, n_values).tril(-1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) or (B, P) -> (B, P) offsets to the decoder's logits."""
        return x.flatten(1) @ (self.weight * self.mask).T

    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x value by value: x_j = choose(base_j + context(x)_j). base (B, P) -> x (B, P).

        The context is linear, so each chosen x_j adds x_j * A[:, j] to every later logit.
        """
        weight = (self.weight * self.mask).T.contiguous()  # row j: A[:, j], the effect of x_j
        logits = base.clone()
        x = torch.empty_like(base)
        for j in range(base.shape[1]):
            x[:, j] = choose(logits[:, j])
            logits[:, j + 1 :] += x[:, j : j + 1] * weight[j, j + 1 :]
        return x


def build_context(kind: str, data_shape: tuple[int, int, int]) -> LinearContext | None:
    """The context term a ModelConfig's `autoregressive` names, or None for "none"."""
    if kind == "none":
        return None
    return LinearContext(math.prod(data_shape))
