"""How well a conditional model keeps its labels: the label fidelity of its samples (does an
image drawn with label y look like a y to an independent classifier?) and, for a model with
its own classifier q(y|x) (M2), its accuracy and confusion matrix on labelled images."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from vaelab.analysis.classifier import ClassifierUnavailable, classifier_for
from vaelab.analysis.conditional_figures import check_label_model
from vaelab.data import DataSplits
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder
from vaelab.runs import TrainedRun, load_run_data

logger = logging.getLogger(__name__)

SAMPLE_BATCH = 1024  # images drawn and classified per pass
DEFAULT_PER_CLASS = 1000  # samples per class: a share to within about ±0.03 (2 standard errors)


class ScoresImages(Protocol):
    """What label fidelity needs of a classifier (`vaelab.analysis.classifier.Classifier`)."""

    def probabilities(self, x: Tensor) -> Tensor:
        """Class probabilities of images x (N, C, H, W): (N, K)."""
        ...


@dataclass(frozen=True)
class LabelFidelity:
    """The share of samples drawn with label y that the classifier assigns to y, per class
    y = 0 .. K-1 (`per_class`), and its mean over the classes."""

    per_class: tuple[float, ...]
    mean: float
    samples_per_class: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": list(self.per_class),
            "mean": self.mean,
            "samples_per_class": self.samples_per_class,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ClassificationSummary:
    """A classifier's accuracy on labelled images and its K x K confusion matrix: row i,
    column j counts the images of class i it predicted as j."""

    accuracy: float
    confusion: tuple[tuple[int, ...], ...]
    examples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "confusion": [list(row) for row in self.confusion],
            "examples": self.examples,
        }


def has_classifier(model: Autoencoder) -> bool:
    """Whether `model` classifies images itself (an M2's q(y|x), `predict_proba`)."""
    return model.classifies


@torch.inference_mode()
def label_fidelity(
    model: Autoencoder,
    classifier: ScoresImages,
    *,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
) -> LabelFidelity:
    """Draw `per_class` samples with each label y (decoded means, as `vaelab compare` scores
    samples) and count those `classifier` assigns to y (its most probable class). The
    samples come from a generator seeded with `seed`, class by class."""
    check_label_model(model, "label fidelity")
    if per_class < 1:
        raise VaelabError(f"per_class must be at least 1, got {per_class}")
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=model.device).manual_seed(seed)
    shares = []
    try:
        for label in range(model.classes):
            hits = 0
            for start in range(0, per_class, SAMPLE_BATCH):
                n = min(SAMPLE_BATCH, per_class - start)
                y = torch.full((n,), label, dtype=torch.long, device=model.device)
                images = model.sample(n, y=y, generator=generator).float()
                probs = classifier.probabilities(images)  # (n, K')
                if probs.shape[-1] < model.classes:
                    raise VaelabError(
                        f"the classifier knows {probs.shape[-1]} classes but the model "
                        f"{model.classes}: score it with a classifier of the model's data"
                    )
                hits += int((probs.argmax(dim=-1).cpu() == label).sum())
            shares.append(hits / per_class)
    finally:
        model.train(was_training)
    return LabelFidelity(tuple(shares), sum(shares) / len(shares), per_class, seed)


@torch.inference_mode()
def class_probabilities(model: Autoencoder, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """q(y|x) of a model with its own classifier, for images x (N, C, H, W): (N, K) float32
    on the CPU, in batches on the model's device."""
    if not has_classifier(model):
        raise VaelabError(
            f"a {model.config.model} has no classifier q(y|x): class probabilities need an m2 run"
        )
    if len(x) == 0:
        return torch.zeros(0, model.classes)
    was_training = model.training
    model.eval()
    try:
        parts = [
            model.predict_proba(batch.to(model.device, model.dtype)).float().cpu()
            for batch in x.split(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def classification_summary(model: Autoencoder, x: Tensor, y: Tensor) -> ClassificationSummary:
    """The accuracy and confusion matrix of the model's classifier (its most probable class)
    on the images x (N, C, H, W) with labels y (N,); images labelled -1 (unknown) are left
    out."""
    y = torch.as_tensor(y).cpu().long()
    if y.shape != (len(x),):
        raise VaelabError(f"pass one label per image: labels {tuple(y.shape)} for {len(x)} images")
    known = y >= 0
    if not bool(known.any()):
        raise VaelabError("no labelled images to score the classifier on")
    x, y = x[known.to(x.device)], y[known]
    predicted = class_probabilities(model, x).argmax(dim=-1)
    classes = model.classes
    if int(y.max()) >= classes:
        raise VaelabError(f"label {int(y.max())} is out of range: the model has {classes} classes")
    confusion = torch.bincount(y * classes + predicted, minlength=classes * classes)
    rows = confusion.view(classes, classes).tolist()
    accuracy = float((predicted == y).double().mean())
    return ClassificationSummary(accuracy, tuple(tuple(row) for row in rows), len(y))


def fully_labelled(
    trained: TrainedRun,
    data: DataSplits,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> DataSplits:
    """The run's data with every training label, for the classifier that scores its samples:
    `data` itself, but for a semi-supervised run (--labelled N), whose training split hides
    all but N labels: its data loaded again without hiding them."""
    if trained.config.data.labelled is None:
        return data
    config = replace(trained.config, data=replace(trained.config.data, labelled=None))
    return load_run_data(config, dataset, data_dir)


def fidelity_record(
    trained: TrainedRun,
    data: DataSplits,
    *,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any] | None:
    """The label fidelity of a label-conditional run (`label_fidelity`) under the cached
    classifier of its data `data` (`classifier_for`, trained on its first use as for `vaelab
    compare`, on every training label: see `fully_labelled`), with the classifier's own
    accuracy and the class names, as eval.json keeps it. None for other runs, and (with a
    warning) for data that cannot train a classifier."""
    model = trained.model
    if not model.needs_labels:
        return None
    labelled = fully_labelled(trained, data, dataset=dataset, data_dir=data_dir)
    try:
        classifier = classifier_for(labelled, device=model.device)
    except ClassifierUnavailable as error:
        logger.warning("no label fidelity: %s", error)
        return None
    fidelity = label_fidelity(model, classifier, per_class=per_class, seed=seed)
    return {
        **fidelity.to_dict(),
        "class_names": list(classifier.class_names[: model.classes]),
        "classifier_accuracy": classifier.test_accuracy,
        "classifier_split": classifier.accuracy_split,
    }
