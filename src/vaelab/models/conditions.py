"""What a conditional model is conditioned on: a class label, or the observed part of an image.

A condition turns the model's inputs into one flat vector c (B, F), which the encoder, the
decoder and a conditional prior all read. Two kinds:

- `LabelCondition`: a class label y in [0, K), as a one-hot vector (Sohn et al. 2015; the y of
  Kingma et al.'s 2014 M2). The likelihood scores every pixel: p(x | z, y).
- `ObservedCondition`: the pixels of chosen quadrants of x itself (Sohn et al. 2015, sec. 4.2,
  as reproduced by Pyro's CVAE tutorial). c is x with the unobserved pixels set to 0, and the
  likelihood scores only the unobserved pixels: p(x_unobserved | z, x_observed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
# Shorthands for the usual choices: halves, and Pyro's "1, 2, 3 quadrants as input".
QUADRANT_GROUPS = {
    "top": ("top-left", "top-right"),
    "bottom": ("bottom-left", "bottom-right"),
    "left": ("top-left", "bottom-left"),
    "right": ("top-right", "bottom-right"),
    "1-quadrant": ("bottom-left",),  # Pyro's CVAE tutorial: 1 quadrant as input
    "2-quadrants": ("top-left", "bottom-left"),  # its 2: the left half
    "3-quadrants": ("top-left", "top-right", "bottom-left"),  # its 3: all but bottom-right
}


def parse_observed(spec: str) -> str:
    """The canonical name of an observed region: quadrant names (or shorthands) separated by
    commas -> the quadrants in QUADRANTS order, joined by commas ("left" ->
    "top-left,bottom-left"). A one-line VaelabError for an unknown name, or for none or all
    four quadrants (nothing left to complete, or nothing to condition on)."""
    chosen: set[str] = set()
    for part in (p.strip().lower() for p in str(spec).split(",")):
        if part in QUADRANTS:
            chosen.add(part)
        elif part in QUADRANT_GROUPS:
            chosen.update(QUADRANT_GROUPS[part])
        else:
            names = ", ".join((*QUADRANTS, *QUADRANT_GROUPS))
            raise VaelabError(f"unknown quadrant {part!r} in --observe {spec!r}: use {names}")
    if len(chosen) == len(QUADRANTS):
        raise VaelabError(
            f"--observe {spec!r} covers the whole image: observe 1 to 3 quadrants, so that "
            "some of it is left to complete"
        )
    return ",".join(q for q in QUADRANTS if q in chosen)


def observed_mask(observe: str, height: int, width: int) -> Tensor:
    """(H, W) bool: True on the pixels of the observed quadrants (`parse_observed`'s names).
    An odd side gives the middle row or column to the bottom or right quadrants."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    rows = {"top": slice(0, height // 2), "bottom": slice(height // 2, height)}
    cols = {"left": slice(0, width // 2), "right": slice(width // 2, width)}
    for quadrant in observe.split(","):
        row, col = quadrant.split("-")
        mask[rows[row], cols[col]] = True
    return mask


class Condition(nn.Module):
    """The condition of a conditional model: `vector(y)` (B, F) of the condition y (labels, or
    the images holding the observed part); the pixels the likelihood scores (`scored`, a
    (C, H, W) bool mask, or None for all)."""

    features: int  # F

    def vector(self, y: Tensor | None) -> Tensor:
        raise NotImplementedError

    @property
    def scored(self) -> Tensor | None:
        return None

    def describe(self) -> str:
        raise NotImplementedError


class LabelCondition(Condition):
    """A class label y (B,) in [0, K): c = one_hot(y)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = self.features = classes

    def check_labels(self, y: Tensor | None, n: int | None = None) -> Tensor:
        """y as int64 (B,), after a one-line VaelabError for missing or out-of-range labels."""
        if y is None:
            raise VaelabError(
                f"this model is conditional on a class label: pass y, labels in [0, {self.classes})"
            )
        y = torch.as_tensor(y)
        if y.dim() != 1 or (n is not None and len(y) != n):
            want = "(B,)" if n is None else f"({n},)"
            raise VaelabError(f"labels y must have shape {want}, got {tuple(y.shape)}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise VaelabError(f"labels y must be whole numbers, got {y.dtype}")
        if len(y) and not (int(y.min()) >= 0 and int(y.max()) < self.classes):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise VaelabError(
                f"label {bad} is out of range: this model has classes 0 to {self.classes - 1}"
            )
        return y.long()

    def vector(self, y: Tensor | None) -> Tensor:
        y = self.check_labels(y)
        return F.one_hot(y, self.classes).float()  # (B, K)

    def describe(self) -> str:
        return f"the class label ({self.classes} classes)"


class ObservedCondition(Condition):
    """The observed quadrants of x: c = x * mask, flattened (B, C * H * W)."""

    def __init__(self, observe: str, data_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = data_shape
        self.observe = observe
        self.features = channels * height * width
        mask = observed_mask(observe, height, width).expand(channels, height, width)
        self.register_buffer("mask", mask.clone(), persistent=False)  # (C, H, W)

    def vector(self, y: Tensor | None) -> Tensor:
        if y is None:
            raise VaelabError(
                f"this model completes images from their {self.observe} quadrants: pass the "
                "images whose observed part it conditions on as y"
            )
        return (y * self.mask).flatten(1)  # (B, C*H*W), unobserved pixels 0

    @property
    def scored(self) -> Tensor:
        return ~self.mask

    def describe(self) -> str:
        return f"the observed quadrants ({self.observe})"


def build_condition(
    classes: int, observe: str | None, data_shape: tuple[int, int, int]
) -> Condition:
    """The observed part where `observe` names quadrants, else the class label."""
    if observe:
        return ObservedCondition(observe, data_shape)
    return LabelCondition(classes)


def scored_pixels(values: Tensor, scored: Tensor | None) -> Tensor:
    """The values the likelihood scores: (..., C, H, W) -> (..., 1, 1, P) of the P scored
    pixels (all of them, unchanged, where `scored` is None). The likelihoods sum over the last
    three dimensions, so their log-density is then over those pixels only."""
    if scored is None:
        return values
    return values.flatten(-3)[..., scored.flatten()].unsqueeze(-2).unsqueeze(-2)
