"""Autoregressive decoder terms: p(x|z) = prod_j p(x_j | z, x_<j) in raster order.

A factorised decoder must explain every pixel from z alone, so neighbouring pixels of a stroke
are independent given z, which costs nats. Adding a term that sees the pixels before x_j (a
fully visible sigmoid belief net, Frey 1998; the role PixelCNN layers play in PixelVAE,
Gulrajani et al. 2016) lets z carry the global shape and the context the local detail:

    params_j = decoder(z)_j + context(x)_j,   context(x)_j depends on x_<j only,

where params are the likelihood's (Bernoulli logits or Gaussian means).

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

    def forward(self, x: Tensor, base: Tensor) -> Tensor:
        """Offsets to the decoder's logits `base` (..., B, C, H, W), from x (B, C, H, W); they
        depend on x only, so one (B, C, H, W) tensor serves every sample of z."""
        offsets = x.flatten(1) @ (self.weight * self.mask).T  # (B, P)
        return offsets.view(x.shape)

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
    pixel are independent given z and the pixels before it. The last layer starts at zero.

    `conditioned` also feeds the decoder's own logits around each pixel (a 3 x 3 convolution,
    no mask: they depend on z only) into the hidden features, so the local model can use what
    z says about the neighbourhood, as the PixelCNN layers of PixelVAE do (Gulrajani et al.
    2016). That convolution runs once per sample of z, the masked one once per image.
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        *,
        conditioned: bool = False,
        kernel: int = LOCAL_KERNEL,
        hidden: int = LOCAL_CHANNELS,
    ) -> None:
        super().__init__()
        self.data_shape = data_shape
        channels = data_shape[0]
        self.features = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.from_base = nn.Conv2d(channels, hidden, 1, bias=False) if conditioned else None
        self.out = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        mask = torch.ones(kernel, kernel)
        mask[kernel // 2, kernel // 2 :] = 0  # the pixel itself and those to its right
        mask[kernel // 2 + 1 :] = 0  # the rows below
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor, base: Tensor) -> Tensor:
        """Offsets to the decoder's logits `base` (..., B, C, H, W), from x (B, C, H, W).

        Unconditioned, they depend on x only: one (B, C, H, W) tensor serves every sample of z.
        """
        x = x.view(-1, *self.data_shape)
        weight = self.features.weight * self.mask
        pre = F.conv2d(x, weight, self.features.bias, padding=self.mask.shape[0] // 2)
        if self.from_base is None:
            return self.out(F.relu(pre))  # (B, C, H, W)
        from_base = self.from_base(base.reshape(-1, *self.data_shape))  # (K*B, hidden, H, W)
        hidden = F.relu(
            from_base.view(*base.shape[:-3], *pre.shape[1:]) + pre
        )  # (..., B, hid, H, W)
        return self.out(hidden.reshape(-1, *pre.shape[1:])).view(base.shape)

    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x pixel by pixel, each from the patch above and to its left: one small
        product per pixel. base (B, C*H*W) -> x (B, C*H*W)."""
        channels, height, width = self.data_shape
        kernel = self.mask.shape[0]
        half = kernel // 2
        bias = self.features.bias[:, None, None].expand(len(base), -1, height, width)
        if self.from_base is not None:  # the logits' part of the features: no causality needed
            bias = bias + self.from_base(base.view(-1, *self.data_shape))
        bias = bias.flatten(2)  # (B, hidden, H*W)
        base = base.view(len(base), channels, height * width)
        weight = (self.features.weight * self.mask).flatten(1).T  # (C*k*k, hidden)
        out_weight = self.out.weight.flatten(1).T  # (hidden, C)
        padded = base.new_zeros(len(base), channels, height + 2 * half, width + 2 * half)
        for row in range(height):
            for col in range(width):
                j = row * width + col
                patch = padded[:, :, row : row + kernel, col : col + kernel].flatten(1)
                hidden = F.relu(torch.addmm(bias[:, :, j], patch, weight))
                logits = base[:, :, j] + torch.addmm(self.out.bias, hidden, out_weight)
                padded[:, :, row + half, col + half] = choose(logits)
        return padded[:, :, half : half + height, half : half + width].flatten(1)


def build_context(
    kind: str, data_shape: tuple[int, int, int]
) -> LinearContext | LocalContext | None:
    """The context term a ModelConfig's `autoregressive` names, or None for "none"."""
    if kind == "none":
        return None
    if kind in ("local", "local-z"):
        return LocalContext(data_shape, conditioned=kind == "local-z")
    return LinearContext(math.prod(data_shape))
