"""The figures and numbers of a run conditional on class labels (cvae, m2) for `vaelab plot` and
`vaelab report`: samples of every class, analogies (style kept, class changed), the label
fidelity of its samples and, for an m2, its classifier's accuracy and confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.analysis.conditional_figures import analogy_grid, class_grid
from vaelab.analysis.figure_conditions import split_labels
from vaelab.analysis.labels import (
    DEFAULT_PER_CLASS,
    classification_summary,
    fidelity_record,
    has_classifier,
)
from vaelab.analysis.plots import ValueRange, _image_figure, _show, _tile_centers, _title
from vaelab.analysis.report import ConditionalSection
from vaelab.data import DataSplits
from vaelab.errors import plural
from vaelab.figures import spread_indices
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit

CONDITIONAL_FIGURES = ("class_samples", "analogies")
PER_CLASS = 8  # samples per class in the class grid
ANALOGY_ROWS = 8  # images in the analogy figure

CAPTIONS = {
    "class_samples": f"{PER_CLASS} samples of every class: row y holds images decoded from "
    "codes z drawn from the prior (p(z|y) for a learned conditional prior) with the label y.",
    "analogies": "Style and class apart (Kingma et al. 2014, fig. 1): each image of the split "
    "(first column) is encoded with its label, and its code decoded with every label in turn. "
    "A row keeps the image's style (slant, thickness) where the code holds it and the label "
    "the class.",
}


def conditional_captions(model: Autoencoder, captions: Mapping[str, str]) -> dict[str, str]:
    """The captions a conditional model's report changes or adds, given the others: its
    samples' conditions, the one condition its grids of codes are decoded with, and CAPTIONS
    for a model conditional on labels; {} for an unconditional model."""
    if not model.conditional:
        return {}
    if model.needs_labels:
        drawn = "Each is drawn with a label y drawn uniformly from the classes."
        grid = "Every code is decoded with the label 0."
        added = CAPTIONS
    else:
        drawn = "Each completes the observed part of an image of the split (spread evenly)."
        grid = "Every code is decoded with the observed part of the split's first image."
        added = {}
    return {
        "samples": f"{captions['samples']} {drawn}",
        "manifold": f"{captions['manifold']} {grid}",
        "traversals": f"{captions['traversals']} {grid}",
        **added,
    }


def class_names(loaded: RunSplit) -> tuple[str, ...]:
    """The names of the model's classes: the data's where it has them, else the numbers."""
    classes = loaded.run.model.classes
    names = loaded.class_names
    if names and len(names) >= classes:
        return tuple(names[:classes])
    return tuple(str(c) for c in range(classes))


def labelled_grid(
    images: Tensor,
    rows: int,
    cols: int,
    *,
    row_names: Sequence[str],
    col_names: Sequence[str] | None = None,
    title: str,
    value_range: ValueRange | None = None,
) -> Figure:
    """Images (rows * cols, C, H, W), row by row, as one mosaic with a name for each row
    (and each column, where given)."""
    fig = _image_figure(rows, cols, extra=(1.4, 1.1))
    ax = fig.add_subplot()
    _show(ax, images, rows, cols, value_range)
    height, width = images.shape[-2:]
    ax.set_yticks(_tile_centers(rows, height), list(row_names), fontsize=8)
    if col_names is not None:
        ax.set_xticks(_tile_centers(cols, width), list(col_names), fontsize=8)
    _title(fig, ax, title)
    return fig


def analogy_images(loaded: RunSplit, count: int = ANALOGY_ROWS) -> list[int]:
    """Indices of `count` images of the split: the first of each class in turn where the
    split has labels (so the rows show different classes), else spread over the split."""
    if loaded.y is None:
        return spread_indices(len(loaded.x), count).tolist()
    chosen: list[int] = []
    for label in torch.unique(loaded.y[loaded.y >= 0]).tolist():
        chosen.append(int(torch.nonzero(loaded.y == label)[0]))
    return sorted(chosen[:count]) or spread_indices(len(loaded.x), count).tolist()


def draw_conditional_figures(loaded: RunSplit, *, seed: int = 0) -> dict[str, Figure]:
    """CONDITIONAL_FIGURES by name for a run conditional on class labels; {} for others."""
    model = loaded.run.model
    if not model.needs_labels:
        return {}
    names = class_names(loaded)
    value_range = loaded.run.value_range
    samples = class_grid(model, PER_CLASS, seed=seed).float().cpu()
    chosen = analogy_images(loaded)
    labels = split_labels(loaded)
    y = (
        torch.full((len(chosen),), -1, dtype=torch.long)  # an m2 infers them
        if labels is None
        else labels[chosen]
    )
    analogies = analogy_grid(model, loaded.x[chosen], y).float().cpu()
    row_names = [f"#{i}" if labels is None else f"#{i} ({names[int(labels[i])]})" for i in chosen]
    return {
        "class_samples": labelled_grid(
            samples,
            model.classes,
            PER_CLASS,
            row_names=names,
            title=f"{model.title}: {PER_CLASS} samples of each class (seed {seed})",
            value_range=value_range,
        ),
        "analogies": labelled_grid(
            analogies,
            len(chosen),
            model.classes + 1,
            row_names=row_names,
            col_names=["image", *names],
            title=f"{model.title} analogies: {len(chosen)} {loaded.split} images, each "
            "decoded with every label",
            value_range=value_range,
        ),
    }


def conditional_section(
    loaded: RunSplit,
    data: DataSplits,
    figures: Sequence[tuple[str, str, bytes]],
    *,
    seed: int = 0,
    fidelity: bool = True,
    per_class: int = DEFAULT_PER_CLASS,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> ConditionalSection | None:
    """The report's section of a run conditional on class labels (None for other runs):
    `figures` (those of `draw_conditional_figures`, as PNGs), the label fidelity of
    `per_class` samples per class under the data's cached classifier (unless `fidelity` is
    False) and, for an m2, its classifier on the labelled images of the split."""
    model = loaded.run.model
    if not model.needs_labels:
        return None
    record = None
    if fidelity:
        record = fidelity_record(
            loaded.run, data, per_class=per_class, seed=seed, dataset=dataset, data_dir=data_dir
        )
    accuracy = confusion = None
    classified = ""
    if has_classifier(model) and loaded.y is not None and bool((loaded.y >= 0).any()):
        summary = classification_summary(model, loaded.x, loaded.y)
        accuracy, confusion = summary.accuracy, summary.confusion
        classified = f"{plural(summary.examples, 'labelled image')} of the {loaded.split} split"
    return ConditionalSection(
        note=f"The model is conditioned on {model.condition.describe()}.",
        figures=figures,
        class_names=class_names(loaded),
        fidelity=record,
        fidelity_note=_fidelity_note(record, fidelity),
        accuracy=accuracy,
        confusion=confusion,
        classified=classified,
    )


def _fidelity_note(record: dict | None, asked: bool) -> str:
    if not asked:
        return "Not measured (--no-fidelity)."
    if record is None:
        return "Not measured: the data has no labels to train the classifier that scores samples."
    return (
        f"The share of {record['samples_per_class']:,} samples drawn with label y (seed "
        f"{record['seed']}) that an independent classifier assigns to y, per class y: the "
        f"cached classifier of `vaelab compare`, whose own {record['classifier_split']} "
        f"accuracy is {record['classifier_accuracy']:.4f} (a ceiling on what this can show)."
    )
