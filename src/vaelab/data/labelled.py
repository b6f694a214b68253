"""Semi-supervised data: keep the labels of N training images, balanced over the classes and
chosen by a seed, and hide the rest (label -1)."""

from __future__ import annotations

import torch

from vaelab.data.splits import Split
from vaelab.errors import VaelabError

UNLABELLED = -1  # the label of an image whose label is hidden


def keep_labels(split: Split, n: int, *, classes: int, seed: int) -> Split:
    """`split` with the labels of n images kept, n / classes of each class drawn at random by
    `seed`, and every other label set to UNLABELLED. One-line errors for data without labels,
    an n that is not a positive multiple of the classes, or a class with too few images."""
    if split.y is None:
        raise VaelabError("--labelled needs a dataset with labels; this one has none")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise VaelabError(f"--labelled must be a positive whole number, got {n!r}")
    if n > len(split):
        raise VaelabError(f"--labelled {n} is more than the {len(split)} training images")
    if n % classes:
        raise VaelabError(
            f"--labelled {n} is not divisible by the {classes} classes: the labelled images are "
            "balanced over them (use a multiple of the class count)"
        )
    per_class = n // classes
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in range(classes):
        members = (split.y == label).nonzero().flatten()
        if len(members) < per_class:
            raise VaelabError(
                f"--labelled {n} needs {per_class} images of class {label}, but the training "
                f"split has {len(members)}"
            )
        kept.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    keep = torch.cat(kept).sort().values
    y = torch.full_like(split.y, UNLABELLED)
    y[keep] = split.y[keep]
    return Split(x=split.x, y=y, factors=split.factors)


def labelled_indices(y: torch.Tensor) -> torch.Tensor:
    """The positions of the labelled images (label >= 0), in order."""
    return (y >= 0).nonzero().flatten()
