"""The conditions a conditional run's figures are drawn with (`run_figures.draw_figures`): the
split's labels for encoding, one condition for the grids of decoded codes, and the conditions
of its samples. Unconditional runs get None everywhere, and their figures are unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.analysis.labels import class_probabilities, has_classifier
from vaelab.errors import VaelabError
from vaelab.figures import spread_indices
from vaelab.runs import RunSplit


@dataclass(frozen=True)
class Condition:
    """A condition y to draw with, and what it is in words (for a figure's title)."""

    y: Tensor | None  # labels (N,), or images (N, C, H, W) holding an observed part
    words: str = ""  # ", decoded with the label 3"; "" for an unconditional model


def split_labels(loaded: RunSplit) -> Tensor | None:
    """The labels of the split that a model conditional on them encodes with (None for other
    models, and for an m2 on data without labels, whose classifier then infers them)."""
    model = loaded.run.model
    if not model.needs_labels:
        return None
    if loaded.y is None and not has_classifier(model):
        raise VaelabError(
            f"this {model.config.model} is conditional on class labels, but the {loaded.split} "
            f"split of {loaded.dataset} has none: draw its figures on data with labels"
        )
    return loaded.y


def class_name(loaded: RunSplit, label: int) -> str:
    """Class `label` by its name where the data has names."""
    names = loaded.class_names
    return names[label] if names and label < len(names) else str(label)


def grid_condition(loaded: RunSplit) -> Condition:
    """The one condition the grids of decoded codes (manifold, traversals) are drawn with:
    the label 0 for a model conditional on labels, the observed part of the split's first
    image for one conditional on observed quadrants."""
    model = loaded.run.model
    if not model.conditional:
        return Condition(None)
    if model.needs_labels:
        y = torch.zeros(1, dtype=torch.long)
        return Condition(y, f", decoded with the label {class_name(loaded, 0)}")
    return Condition(loaded.x[:1], f", completing the observed part of {loaded.split} image #0")


def sample_condition(loaded: RunSplit, n: int, seed: int) -> Condition:
    """The conditions of n samples: labels drawn uniformly (seeded by `seed`) for a model
    conditional on labels; the observed parts of n images spread over the split for one
    conditional on observed quadrants (at most the split's size: fewer samples then)."""
    model = loaded.run.model
    if not model.conditional:
        return Condition(None)
    if model.needs_labels:
        y = torch.randint(model.classes, (n,), generator=torch.Generator().manual_seed(seed))
        return Condition(y, ", labels y drawn uniformly")
    images = loaded.x[spread_indices(len(loaded.x), n)]
    return Condition(images, f", completing the observed parts of {len(images)} images")


def pair_labels(loaded: RunSplit, starts: list[int]) -> list[Tensor] | None:
    """The label each interpolation path is decoded with, that of its first image (an m2's
    classifier infers it where the split has no labels); None for other models."""
    model = loaded.run.model
    if not model.needs_labels:
        return None
    labels = split_labels(loaded)
    if labels is None:
        labels = class_probabilities(model, loaded.x[starts]).argmax(dim=-1)
        return [labels[k] for k in range(len(starts))]
    return [labels[a] for a in starts]
