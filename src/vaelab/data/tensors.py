"""Tensor helpers shared by the sources: bring images to a requested size and channel count."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
import torch.nn.functional as F

from vaelab.data.splits import Split

log = logging.getLogger(__name__)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, channels, H, W): RGB -> gray by channel mean, gray -> RGB by repeat."""
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(dim=1, keepdim=True)
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), bilinear with antialiasing; values stay in their range."""
    if tuple(x.shape[-2:]) == tuple(size) or x.shape[0] == 0:
        return x
    # Chunks bound the peak memory of the interpolation on large sets.
    chunks = [
        F.interpolate(part, size=size, mode="bilinear", antialias=True, align_corners=False)
        for part in x.split(4096)
    ]
    return torch.cat(chunks).contiguous()


def conform(split: Split, *, image_size: tuple[int, int] | None, channels: int | None) -> Split:
    """The split as float32 contiguous images with the requested size and channels."""
    x = split.x.to(torch.float32)
    if channels is not None:
        x = convert_channels(x, channels)
    if image_size is not None:
        x = resize(x, image_size)
    return replace(split, x=x.contiguous())  # labels and factor indices ride along


def looks_like_0_255(x: torch.Tensor) -> bool:
    """Whether float images `x` look like unscaled 8-bit pixels: min >= 0 and max > 2.

    Data in [0, 1] never exceeds 1 and standardised data goes below 0, so this flags values
    that were probably meant to be divided by 255. Non-float or empty tensors give False.
    """
    if not x.is_floating_point() or x.numel() == 0:
        return False
    low, high = torch.aminmax(x.detach())
    return bool(low >= 0) and bool(high > 2)  # NaN compares False: not flagged
