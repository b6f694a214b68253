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
import torch.nn.functional as F
from torch import Tensor, nn

LOCAL_KERNEL = 7  # the local context sees the 3 rows above and 3 pixels to each side
LOCAL_CHANNELS = 32  # hidden features of the local context


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


class LocalContext(nn.Module):
    """A one-layer PixelCNN (van den Oord et al. 2016): a masked k x k convolution over the
    pixels above and to the left (mask "A": not the pixel itself), ReLU, then a 1 x 1
    convolution to one offset per channel. Pixels are visited row by row; the channels of a
    pixel are independent given z and the pixels before it. The last layer starts at zero."""

    def __init__(
        self, data_shape: tuple[int, int, int], kernel: int = LOCAL_KERNEL,
        hidden: int = LOCAL_CHANNELS,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data_shape = data_shape
        channels = data_shape[0]
        self.features = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.out = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        mask = torch.ones(kernel, kernel)
        mask[kernel // 2, kernel // 2 :] = 0  # the pixel itself and those to its right
        mask[kernel // 2 + 1 :] = 0  # the rows below
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C*H*W) offsets to the decoder's logits."""
        x = x.view(-1, *self.data_shape)
        weight = self.features.weight * self.mask
        hidden = F.relu(F.conv2d(x, weight, self.features.bias, padding=self.mask.shape[0] // 2))
        return self.out(hidden).flatten(1)

    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x pixel by pixel, each from the patch above and to its left: one small
        product per pixel. base (B, C*H*W) -> x (B, C*H*W)."""
        channels, height, width = self.data_shape
        kernel = self.mask.shape[0]
        half = kernel // 2
        base = base.view(len(base), channels, height * width)
        weight = (self.features.weight * self.mask).flatten(1).T  # (C*k*k, hidden)
        out_weight = self.out.weight.flatten(1).T  # (hidden, C)
        padded = base.new_zeros(len(base), channels, height + 2 * half, width + 2 * half)
        for row in range(height):
            for col in range(width):
                patch = padded[:, :, row : row + kernel, col : col + kernel].flatten(1)
                hidden = F.relu(torch.addmm(self.features.bias, patch, weight))
                logits = base[:, :, row * width + col] + torch.addmm(
                    self.out.bias, hidden, out_weight
                )
                padded[:, :, row + half, col + half] = choose(logits)
        return padded[:, :, half : half + height, half : half + width].flatten(1)


def build_context(
    kind: str, data_shape: tuple[int, int, int]
) -> LinearContext | LocalContext | None:
    """The context term a ModelConfig's `autoregressive` names, or None for "none"."""
    if kind == "none":
        return None
    if kind == "local":
        return LocalContext(data_shape)
    return LinearContext(math.prod(data_shape))
