"""The measures of `vaelab compare` for models trained on the same data, and their figure.

For each model: how often random codes decode to recognisable images (by a classifier trained
on the data), how much of its code box is empty, how smoothly straight paths decode, and how far
its samples are from test images in the classifier's feature space. See `measures.DEFINITIONS`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.analysis import measures
from vaelab.analysis.classifier import Classifier, ClassifierUnavailable, classifier_for
from vaelab.analysis.compare_figure import FigureColumn
from vaelab.analysis.compare_report import (
    MEASURES,
    NEEDS_CLASSIFIER,
    RunMeasures,
    Settings,
    run_name,
)
from vaelab.analysis.latents import decode_codes, encode_dataset, project_2d
from vaelab.analysis.samplers import SAMPLERS, BoxSampler, Sampler, make_sampler
from vaelab.data import DataSplits
from vaelab.models import Autoencoder

log = logging.getLogger(__name__)

GRID = 64  # samples drawn per sampler in the figure


@dataclass(frozen=True)
class Measured:
    """What `measure_models` found: a row of measures and a figure column per model."""

    runs: list[RunMeasures]
    columns: list[FigureColumn]
    classifier: dict[str, Any]  # test accuracy, the split it was measured on, cache folder
    test_images: int  # the Frechet distances compare samples with this many test images
    reference_frechet: float | None  # training vs test images: the floor at this sample size
    reference_samples: int  # training images in the reference
    unavailable: dict[str, str]  # measure key -> why it is missing


def measure_models(
    runs: list[Path],
    models: list[Autoencoder],
    data: DataSplits,
    settings: Settings,
    *,
    device: torch.device,
) -> Measured:
    """Measure `models` (the runs' models, all trained on `data`) with the same codes, pairs
    and classifier; `runs` name them. The classifier is trained once per dataset and cached.

    Measures use each model's prior (N(0, I) for a VAE or an autoencoder; a VQ-VAE's
    PixelCNN); settings.samplers may add "gmm", a Gaussian mixture fitted to each model's
    training codes (figure and Frechet distance).
    """
    classifier, unavailable = _classifier(data, device)
    for name in SAMPLERS:
        if name not in settings.samplers:
            unavailable.setdefault(f"frechet_{name}", f"not requested (sampler '{name}')")
    test_features = None if classifier is None else classifier.features(data.test.x)
    pairs = _test_pairs(len(data.test), settings)
    results, columns = [], []
    for run, model in zip(runs, models, strict=True):
        log.info("measuring %s", run)
        config = model.config
        title = f"{run_name(run)} ({config.model}, D={config.latent_dim})"
        values, column = _measure_run(
            model, title, data, classifier, test_features, pairs, settings
        )
        values = {key: values.get(key) for key in MEASURES}
        results.append(RunMeasures(Path(run), config.model, config.latent_dim, values))
        columns.append(column)
    return Measured(
        runs=results,
        columns=columns,
        classifier=_classifier_summary(classifier, unavailable),
        test_images=len(data.test),
        **_reference(classifier, data, test_features, settings),
        unavailable=unavailable,
    )


def _classifier(data: DataSplits, device: torch.device) -> tuple[Classifier | None, dict[str, str]]:
    try:
        return classifier_for(data, device=device), {}
    except ClassifierUnavailable as error:
        log.warning("%s: the measures that need it are left out", error)
        needs = [key for key, (_, concept) in MEASURES.items() if concept in NEEDS_CLASSIFIER]
        return None, dict.fromkeys(needs, str(error))


def _classifier_summary(classifier: Classifier | None, unavailable: dict[str, str]) -> dict:
    if classifier is None:
        return {"available": False, "reason": next(iter(unavailable.values()), "")}
    return {
        "available": True,
        "accuracy": classifier.test_accuracy,
        "accuracy_split": classifier.accuracy_split,
        "cache": str(classifier.path),
    }


def _test_pairs(n_test: int, settings: Settings) -> Tensor:
    """(P, 2) indices of distinct test images, the same pairs for every run."""
    generator = torch.Generator().manual_seed(settings.seed)
    count = min(settings.n_pairs, n_test // 2)
    return torch.randperm(n_test, generator=generator)[: 2 * count].view(count, 2)


def _generator(settings: Settings, offset: int) -> torch.Generator:
    """A fresh generator per measure, so each one's draws do not depend on the others."""
    return torch.Generator().manual_seed(settings.seed * 1000 + offset)


def _measure_run(
    model: Autoencoder,
    title: str,
    data: DataSplits,
    classifier: Classifier | None,
    test_features: Tensor | None,
    pairs: Tensor,
    settings: Settings,
) -> tuple[dict[str, float], FigureColumn]:
    codes = encode_dataset(model, data.train.x)  # (N, D)
    fitted: dict[str, Sampler] = {
        name: make_sampler(name, seed=settings.seed, model=model).fit(codes)
        for name in settings.samplers
    }
    box = BoxSampler().fit(codes)
    values: dict[str, float] = {"gap_fraction": _gap_fraction(codes, box, settings)}
    jumps = _jumps(model, data.test.x, pairs, settings)
    values.update(jump_mean=float(jumps.mean()), jump_max=float(jumps.max()))
    if classifier is not None:
        for name, source in (("prior", fitted["prior"]), ("box", box)):
            z = source.sample(settings.n_samples, generator=_generator(settings, 1))
            scores = measures.decodability(classifier.probabilities(decode_codes(model, z)))
            values.update(
                {
                    f"decodable_{name}": scores.fraction,
                    f"confidence_{name}": scores.confidence,
                    f"entropy_{name}": scores.entropy,
                }
            )
        values["midpoint_confidence"] = _midpoint_confidence(model, classifier, data, pairs)
        for name, source in fitted.items():
            z = source.sample(settings.n_samples, generator=_generator(settings, 2))
            features = classifier.features(decode_codes(model, z))
            values[f"frechet_{name}"] = measures.frechet_distance(features, test_features)
    test_codes = encode_dataset(model, data.test.x)
    grids = {
        name: decode_codes(model, source.sample(GRID, generator=_generator(settings, 3)))
        for name, source in fitted.items()
    }
    column = FigureColumn(title, project_2d(test_codes), data.test.y, grids)
    return values, column


def _gap_fraction(codes: Tensor, box: BoxSampler, settings: Settings) -> float:
    generator = _generator(settings, 4)
    if len(codes) > settings.max_codes:
        codes = codes[torch.randperm(len(codes), generator=generator)[: settings.max_codes]]
    if len(codes) < 2:
        return math.nan
    return measures.gap_fraction(codes, box.sample(settings.n_box, generator=generator))


def _jumps(model: Autoencoder, test_x: Tensor, pairs: Tensor, settings: Settings) -> Tensor:
    z = encode_dataset(model, test_x[pairs.flatten()]).view(len(pairs), 2, -1)  # (P, 2, D)
    return measures.interpolation_smoothness(
        lambda path: decode_codes(model, path), z[:, 0], z[:, 1], settings.steps
    )


def _midpoint_confidence(
    model: Autoencoder, classifier: Classifier, data: DataSplits, pairs: Tensor
) -> float:
    z = encode_dataset(model, data.test.x[pairs.flatten()]).view(len(pairs), 2, -1)
    midpoints = decode_codes(model, z.mean(dim=1))  # (P, C, H, W)
    return measures.decodability(classifier.probabilities(midpoints)).confidence


def _reference(
    classifier: Classifier | None,
    data: DataSplits,
    test_features: Tensor | None,
    settings: Settings,
) -> dict[str, Any]:
    """Training images against test images, at the samples' size: what real images score."""
    if classifier is None:
        return {"reference_frechet": None, "reference_samples": 0}
    generator = _generator(settings, 5)
    index = torch.randperm(len(data.train), generator=generator)[: settings.n_samples]
    features = classifier.features(data.train.x[index])
    distance = measures.frechet_distance(features, test_features)
    return {"reference_frechet": distance, "reference_samples": len(index)}
