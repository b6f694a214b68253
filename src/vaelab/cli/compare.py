"""`vaelab compare`: runs trained on the same data, side by side in a figure and a table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from vaelab.analysis.compare import measure_models
from vaelab.analysis.compare_figure import comparison_figure
from vaelab.analysis.compare_report import ComparisonResult, Settings, markdown_table, result_json
from vaelab.analysis.samplers import SAMPLERS
from vaelab.cli.arguments import MODELS_DEVICE, add_quiet, add_shared_arguments
from vaelab.data import DataSplits
from vaelab.errors import VaelabError
from vaelab.figures import save_figure
from vaelab.files import atomic_write_text
from vaelab.runs import TrainedRun, load_run_data, open_run
from vaelab.training.runs import resolve_device

log = logging.getLogger(__name__)

FIGURE_FILE, JSON_FILE, TABLE_FILE = "comparison.png", "comparison.json", "comparison.md"


def compare_runs(
    runs: list[Path],
    out_dir: Path,
    *,
    sampler: str = "prior",
    n_samples: int = 2000,
    n_pairs: int = 100,
    seed: int = 0,
    device: str = "cpu",
    dataset: str | None = None,
    data_dir: str | None = None,
) -> ComparisonResult:
    """Measure `runs` (trained on the same data) and write comparison.png/.json/.md to out_dir.

    Measures use each model's prior (N(0, I) for a VAE or an autoencoder; a VQ-VAE's
    PixelCNN); `sampler="gmm"` adds samples from a Gaussian mixture fitted to each run's
    training codes (figure and Frechet distance). `dataset` and `data_dir`
    override where the runs' data is read from, if it moved since training.
    """
    if sampler not in SAMPLERS:
        raise VaelabError(f"unknown sampler '{sampler}': use one of {', '.join(SAMPLERS)}")
    if not runs:
        raise VaelabError("name at least one run folder to compare")
    samplers = ("prior",) if sampler == "prior" else ("prior", sampler)
    settings = Settings(samplers=samplers, n_samples=n_samples, n_pairs=n_pairs, seed=seed)
    target = resolve_device(device)
    trained = [open_run(run, device=target) for run in runs]
    for run, opened in zip(runs, trained, strict=True):
        if opened.model.conditional:
            raise VaelabError(
                f"{run} is a {opened.model.config.model} run: compare measures unconditional "
                "models (its samples and gaps take no condition); use vaelab eval for it"
            )
    data = _shared_data(trained, runs, dataset, data_dir)
    models = [run.model for run in trained]
    measured = measure_models(runs, models, data, settings, device=target)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = comparison_figure(
        measured.columns, data_range=trained[0].value_range, class_names=data.class_names
    )
    result = ComparisonResult(
        dataset=data.name,
        runs=measured.runs,
        settings=settings,
        classifier=measured.classifier,
        test_images=measured.test_images,
        reference_frechet=measured.reference_frechet,
        reference_samples=measured.reference_samples,
        unavailable=measured.unavailable,
        figure=save_figure(figure, out_dir / FIGURE_FILE, dpi=100),
        json=out_dir / JSON_FILE,
        table=out_dir / TABLE_FILE,
    )
    atomic_write_text(result.json, json.dumps(result_json(result), indent=2) + "\n")
    atomic_write_text(result.table, markdown_table(result))
    return result


def _shared_data(
    trained: list[TrainedRun], runs: list[Path], dataset: str | None, data_dir: str | None
) -> DataSplits:
    """The data every run was trained on, loaded once; VaelabError when the runs differ."""
    configs = [run.config for run in trained]
    first = configs[0]
    for run, config in zip(runs, configs, strict=True):
        same = (config.data.dataset, config.data.image_size, config.data.channels) == (
            first.data.dataset,
            first.data.image_size,
            first.data.channels,
        ) and config.model.data_shape == first.model.data_shape
        if not same:
            raise VaelabError(
                f"runs were trained on different data: {runs[0]} on {first.data.dataset} "
                f"{first.model.data_shape}, {run} on {config.data.dataset} "
                f"{config.model.data_shape}; compare runs of one dataset"
            )
        split = (config.data.seed, config.data.val_fraction, config.data.test_fraction)
        if split != (first.data.seed, first.data.val_fraction, first.data.test_fraction):
            log.warning(
                "%s split its data differently from %s; using the split of %s",
                run,
                runs[0],
                runs[0],
            )
    data = load_run_data(first, dataset, data_dir)
    if len(data.test) < 2:
        raise VaelabError(
            f"the test split of {data.name} has {len(data.test)} images; the comparison needs "
            "at least 2"
        )
    return data


# --- the command line -------------------------------------------------------------------------


def add_parsers(subparsers: Any) -> None:
    """The `compare` subcommand."""
    parser = subparsers.add_parser(
        "compare",
        help="runs on the same data side by side: figure and table of measures",
        description="Latent maps, sample grids and measures (decodability of random codes, "
        "gaps, interpolation smoothness, a Frechet distance in a classifier's feature space) for "
        "runs trained on the same data; writes comparison.png, comparison.json and comparison.md.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders on the same data")
    parser.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        default="gmm",
        help="gmm also samples from a Gaussian mixture fitted to each run's training codes "
        "(default: gmm)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="comparison",
        help="folder for comparison.png/.json/.md (default: ./comparison)",
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="random codes per measure (default: 2000)"
    )
    parser.add_argument(
        "--pairs", type=int, default=100, help="test pairs to interpolate between (default: 100)"
    )
    add_shared_arguments(parser, seed="seed of codes and pairs")
    add_shared_arguments(
        parser,
        device=MODELS_DEVICE,
        dataset="the runs' data, if it moved (default: the path in the first run's config.json)",
        data_dir="folder with the MNIST IDX files (default: the first run's, then $VAELAB_DATA, "
        "then the download cache, then Debian's /usr/share/datasets/fashion-mnist)",
    )
    add_quiet(parser)


def _compare(args: argparse.Namespace) -> list[Path]:
    result = compare_runs(
        [Path(p) for p in args.runs],
        Path(args.out),
        sampler=args.sampler,
        n_samples=args.samples,
        n_pairs=args.pairs,
        seed=args.seed,
        device=args.device,
        dataset=args.dataset,
        data_dir=args.data_dir,
    )
    return [result.figure, result.json, result.table]


COMMANDS = {"compare": _compare}
