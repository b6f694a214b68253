"""`vaelab compare`: runs trained on the same data, side by side in a figure and a table.

For each run: how often random codes decode to recognisable images (by a classifier trained on
the data), how much of its code box is empty, how smoothly straight paths decode, and how far its
samples are from test images in the classifier's feature space. See `measures.DEFINITIONS`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.analysis import measures
from vaelab.analysis.classifier import Classifier, ClassifierUnavailable, classifier_for
from vaelab.analysis.compare_figure import FigureColumn, draw_comparison
from vaelab.analysis.compare_report import (
    MEASURES,
    NEEDS_CLASSIFIER,
    ComparisonResult,
    RunMeasures,
    Settings,
    markdown_table,
    result_json,
    run_name,
)
from vaelab.analysis.latents import encode_dataset, project_2d
from vaelab.analysis.samplers import SAMPLERS, BoxSampler, Sampler, make_sampler
from vaelab.data import DataSplits, load_data
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_text
from vaelab.models import Autoencoder
from vaelab.training import RunConfig, load_checkpoint
from vaelab.training.runs import resolve_device

log = logging.getLogger(__name__)

FIGURE_FILE, JSON_FILE, TABLE_FILE = "comparison.png", "comparison.json", "comparison.md"
GRID = 64  # samples drawn per sampler in the figure


def compare_runs(
    runs: list[Path], out_dir: Path, *, sampler: str = "prior", n_samples: int = 2000,
    n_pairs: int = 100, seed: int = 0, device: str = "cpu", dataset: str | None = None,
    data_dir: str | None = None,
) -> ComparisonResult:  # fmt: skip
    """Measure `runs` (trained on the same data) and write comparison.png/.json/.md to out_dir.

    Measures use the prior N(0, I); `sampler="gmm"` adds samples from a Gaussian mixture fitted
    to each run's training codes (figure and Frechet distance). `dataset` and `data_dir`
    override where the runs' data is read from, if it moved since training.
    """
    if sampler not in SAMPLERS:
        raise VaelabError(f"unknown sampler '{sampler}': use one of {', '.join(SAMPLERS)}")
    if not runs:
        raise VaelabError("name at least one run folder to compare")
    samplers = ("prior",) if sampler == "prior" else ("prior", sampler)
    settings = Settings(samplers=samplers, n_samples=n_samples, n_pairs=n_pairs, seed=seed)
    target = resolve_device(device)
    models = [load_checkpoint(run, device=target)[:2] for run in runs]
    data = _shared_data([config for _, config in models], runs, dataset, data_dir)
    classifier, unavailable = _classifier(data, target)
    for name in SAMPLERS:
        if name not in samplers:
            unavailable.setdefault(f"frechet_{name}", f"not requested (sampler '{name}')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_features = None if classifier is None else classifier.features(data.test.x)
    pairs = _test_pairs(len(data.test), settings)
    results, columns = [], []
    for run, (model, _) in zip(runs, models, strict=True):
        log.info("measuring %s", run)
        values, column = _measure_run(model, data, classifier, test_features, pairs, settings)
        config = model.config
        values = {key: values.get(key) for key in MEASURES}
        results.append(RunMeasures(Path(run), config.model, config.latent_dim, values))
        columns.append(replace(column, title=_title(run, model)))
    data_range = (float(data.train.x.min()), float(data.train.x.max()))
    figure = draw_comparison(columns, out_dir / FIGURE_FILE, data_range=data_range,
                             class_names=data.class_names)  # fmt: skip
    result = ComparisonResult(
        dataset=data.name,
        runs=results,
        settings=settings,
        classifier=_classifier_summary(classifier, unavailable),
        test_images=len(data.test),
        **_reference(classifier, data, test_features, settings),
        unavailable=unavailable,
        figure=figure,
        json=out_dir / JSON_FILE,
        table=out_dir / TABLE_FILE,
    )
    atomic_write_text(result.json, json.dumps(result_json(result), indent=2) + "\n")
    atomic_write_text(result.table, markdown_table(result))
    return result


def _title(run: Path, model: Autoencoder) -> str:
    return f"{run_name(run)} ({model.config.model}, D={model.config.latent_dim})"


def _shared_data(
    configs: list[RunConfig], runs: list[Path], dataset: str | None, data_dir: str | None
) -> DataSplits:
    """The data every run was trained on, loaded once; VaelabError when the runs differ."""
    first = configs[0]
    for run, config in zip(runs, configs, strict=True):
        same = (config.data.dataset, config.data.image_size, config.data.channels) == (
            first.data.dataset, first.data.image_size, first.data.channels
        ) and config.model.data_shape == first.model.data_shape  # fmt: skip
        if not same:
            raise VaelabError(
                f"runs were trained on different data: {runs[0]} on {first.data.dataset} "
                f"{first.model.data_shape}, {run} on {config.data.dataset} "
                f"{config.model.data_shape}; compare runs of one dataset"
            )
        split = (config.data.seed, config.data.val_fraction, config.data.test_fraction)
        if split != (first.data.seed, first.data.val_fraction, first.data.test_fraction):
            log.warning("%s split its data differently from %s; using the split of %s",
                        run, runs[0], runs[0])  # fmt: skip
    data_config = replace(first.data, dataset=dataset or first.data.dataset,
                          data_dir=data_dir or first.data.data_dir)  # fmt: skip
    data = load_data(data_config, progress=False)
    if tuple(data.shape) != tuple(first.model.data_shape):
        raise VaelabError(f"dataset {data.name} now has shape {data.shape} but the runs were "
                          f"trained on {first.model.data_shape}")  # fmt: skip
    if len(data.test) < 2:
        raise VaelabError(f"the test split of {data.name} has {len(data.test)} images; the "
                          "comparison needs at least 2")  # fmt: skip
    return data


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
    return {"available": True, "accuracy": classifier.test_accuracy,
            "accuracy_split": classifier.accuracy_split, "cache": str(classifier.path)}  # fmt: skip


def _test_pairs(n_test: int, settings: Settings) -> Tensor:
    """(P, 2) indices of distinct test images, the same pairs for every run."""
    generator = torch.Generator().manual_seed(settings.seed)
    count = min(settings.n_pairs, n_test // 2)
    return torch.randperm(n_test, generator=generator)[: 2 * count].view(count, 2)


def _generator(settings: Settings, offset: int) -> torch.Generator:
    """A fresh generator per measure, so each one's draws do not depend on the others."""
    return torch.Generator().manual_seed(settings.seed * 1000 + offset)


@torch.inference_mode()
def _decode(model: Autoencoder, z: Tensor, batch_size: int = 1024) -> Tensor:
    """Decode codes z (N, D) in batches: (N, C, H, W) on the CPU."""
    return torch.cat([model.decode(chunk.to(model.device, model.dtype)).float().cpu()
                      for chunk in z.split(batch_size)])  # fmt: skip


def _measure_run(
    model: Autoencoder, data: DataSplits, classifier: Classifier | None,
    test_features: Tensor | None, pairs: Tensor, settings: Settings,
) -> tuple[dict[str, float], FigureColumn]:  # fmt: skip
    codes = encode_dataset(model, data.train.x)  # (N, D)
    fitted: dict[str, Sampler] = {name: make_sampler(name, seed=settings.seed).fit(codes)
                                  for name in settings.samplers}  # fmt: skip
    box = BoxSampler().fit(codes)
    values: dict[str, float] = {"gap_fraction": _gap_fraction(codes, box, settings)}
    jumps = _jumps(model, data.test.x, pairs, settings)
    values.update(jump_mean=float(jumps.mean()), jump_max=float(jumps.max()))
    if classifier is not None:
        for name, source in (("prior", fitted["prior"]), ("box", box)):
            z = source.sample(settings.n_samples, generator=_generator(settings, 1))
            scores = measures.decodability(classifier.probabilities(_decode(model, z)))
            values.update({f"decodable_{name}": scores.fraction,
                           f"confidence_{name}": scores.confidence,
                           f"entropy_{name}": scores.entropy})  # fmt: skip
        values["midpoint_confidence"] = _midpoint_confidence(model, classifier, data, pairs)
        for name, source in fitted.items():
            z = source.sample(settings.n_samples, generator=_generator(settings, 2))
            features = classifier.features(_decode(model, z))
            values[f"frechet_{name}"] = measures.frechet_distance(features, test_features)
    test_codes = encode_dataset(model, data.test.x)
    grids = {name: _decode(model, source.sample(GRID, generator=_generator(settings, 3)))
             for name, source in fitted.items()}  # fmt: skip
    column = FigureColumn("", project_2d(test_codes), data.test.y, grids)
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
        lambda path: _decode(model, path), z[:, 0], z[:, 1], settings.steps
    )


def _midpoint_confidence(
    model: Autoencoder, classifier: Classifier, data: DataSplits, pairs: Tensor
) -> float:
    z = encode_dataset(model, data.test.x[pairs.flatten()]).view(len(pairs), 2, -1)
    midpoints = _decode(model, z.mean(dim=1))  # (P, C, H, W)
    return measures.decodability(classifier.probabilities(midpoints)).confidence


def _reference(
    classifier: Classifier | None, data: DataSplits, test_features: Tensor | None,
    settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    """Training images against test images, at the samples' size: what real images score."""
    if classifier is None:
        return {"reference_frechet": None, "reference_samples": 0}
    generator = _generator(settings, 5)
    index = torch.randperm(len(data.train), generator=generator)[: settings.n_samples]
    features = classifier.features(data.train.x[index])
    distance = measures.frechet_distance(features, test_features)
    return {"reference_frechet": distance, "reference_samples": len(index)}
