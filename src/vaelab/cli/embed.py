"""`vaelab embed`: the posterior of every image of a dataset, saved for other tools."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.embedding import (
    DEFAULT_BATCH,
    Embedding,
    check_output,
    embed,
    save_embedding,
)
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    parse_positive,
    show_progress,
)
from vaelab.data import looks_like_0_255, registered_name
from vaelab.data.loading import resolve_source
from vaelab.data.tensors import conform
from vaelab.errors import VaelabError, plural
from vaelab.runs import TrainedRun, open_run
from vaelab.training.threads import cpu_threads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Images:
    """The images to embed, brought to the model's shape, and what to call them."""

    x: torch.Tensor  # (N, C, H, W), on the CPU
    y: torch.Tensor | None  # (N,)
    class_names: tuple[str, ...] | None
    name: str  # in words: "digits", "the test split of digits"


def load_images(
    trained: TrainedRun,
    data: str | None = None,
    *,
    split: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> Images:
    """Every image of `data` (default: the run's dataset) in its source's order, converted as
    the run's training data were (its --image-size and --channels), or with `split` that split
    of the run's own train / val / test split of it."""
    run_data = trained.config.data
    dataset = run_data.dataset if data is None else data
    if (
        data is None
        and registered_name(dataset) is None
        and not Path(dataset).expanduser().exists()
    ):
        raise VaelabError(
            f"the run's dataset {dataset} does not exist any more; pass the images as DATA"
        )
    if split is not None:
        chosen = trained.choose_split(split, dataset=data, data_dir=data_dir)
        name = f"the {chosen.split} split of {chosen.dataset}"
        return Images(chosen.x, chosen.y, chosen.class_names, name)
    config = replace(run_data, dataset=dataset, data_dir=data_dir or run_data.data_dir)
    name, load = resolve_source(dataset)
    source = load(config, progress=progress)
    # A registered source's official test set follows its training pool (MNIST: 60000, 10000).
    parts = [source.pool] if source.test is None else [source.pool, source.test]
    parts = [conform(p, image_size=config.image_size, channels=config.channels) for p in parts]
    shape, wanted = tuple(parts[0].x.shape[1:]), tuple(trained.config.model.data_shape)
    if shape != wanted:
        raise VaelabError(
            f"{dataset}: images of shape {shape} but the model takes {wanted}; embed converts "
            "images only as the run's training did (its --image-size and --channels), so bring "
            "them to the model's shape first"
        )
    x = parts[0].x if len(parts) == 1 else torch.cat([p.x for p in parts])  # (N, C, H, W)
    if any(p.y is None for p in parts):
        return Images(x, None, None, name)
    return Images(x, torch.cat([p.y for p in parts]), source.class_names, name)


def _check_scale(images: Images, trained: TrainedRun) -> None:
    """Warn when the images look like 0..255 pixel values but the run trained on [0, 1]."""
    trained_high = trained.value_range[1] if trained.value_range else 1.0
    if trained_high <= 2 and looks_like_0_255(images.x):
        low, high = torch.aminmax(images.x)
        logger.warning(
            "%s spans [%g, %g] but the run was trained on values up to %g: divide 8-bit pixel "
            "values by 255 for codes that mean something",
            images.name,
            float(low),
            float(high),
            trained_high,
        )


def embed_run(
    run: Path,
    data: str | None = None,
    *,
    out: str | Path,
    samples: int = 0,
    seed: int = 0,
    split: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    checkpoint: str | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool = False,
) -> tuple[Embedding, Images, Path]:
    """Embed every image of `data` (see `load_images`) with a run's checkpoint and save the
    codes to `out` (see `save_embedding`); returns (codes, images, path written)."""
    path = check_output(out)  # a wrong suffix or folder fails before any work
    trained = open_run(run, checkpoint=checkpoint, device=device)
    if samples and not trained.model.stochastic_encoder:
        raise VaelabError(
            f"--samples {samples}: the codes of {run} (a {trained.config.model.model} model) "
            "are points, not distributions; only vae runs have samples to draw"
        )
    images = load_images(trained, data, split=split, data_dir=data_dir, progress=progress)
    _check_scale(images, trained)
    codes = embed(
        trained.model,
        images.x,
        batch_size=batch_size,
        samples=samples,
        seed=seed,
        progress=progress,
        y=images.y,
    )
    save_embedding(codes, path, class_names=images.class_names)
    return codes, images, path


def add_parsers(subparsers: Any) -> None:
    """The `embed` subcommand."""
    parser = subparsers.add_parser(
        "embed",
        help="the codes of every image of a dataset, as .npy, .npz or .csv",
        description="Encode every image of a dataset and save the posterior q(z|x) of each, in "
        "the data's order: .npy holds the means (N, D); .npz the arrays mean, std, samples "
        "and labels; .csv one row per image (index, label, mean_0.., std_0.., sample_0_0..). "
        "The images are converted as the run's training data were (--image-size, --channels); "
        "other shapes are an error.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        help="digits, mnist, fashion-mnist, shapes, an image folder or a .npy/.npz file; all "
        "of its images, MNIST's 60000 training then 10000 test images (default: the run's dataset)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="the file to write: .npy (means), .npz (means, stds, samples, labels) or .csv",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="S",
        help="also draw S codes z ~ q(z|x) per image, vae runs only (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=parse_positive,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"images per encoder pass; bounds memory, not the result (default: {DEFAULT_BATCH})",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        device=f"{MODEL_DEVICE} (default: auto)",
        seed="seed of the samples; each image draws from its own (default: 0)",
        data_dir=RUN_DATA_DIR,
    )
    parser.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="only this split of the run's own train / val / test split of DATA, drawn as in "
        "training; an error if it is empty (default: every image)",
    )
    parser.add_argument(
        "--threads",
        type=parse_positive,
        metavar="N",
        help="CPU threads for this process (default: torch's, one per core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet(parser)


def _embed(args: argparse.Namespace) -> Iterator[str | Path]:
    if args.samples < 0:
        raise VaelabError(f"--samples must be 0 or more, got {args.samples}")
    with cpu_threads(args.threads):
        codes, images, path = embed_run(
            Path(args.run),
            args.data,
            out=args.out,
            samples=args.samples,
            seed=args.seed,
            split=args.split,
            batch_size=args.batch_size,
            checkpoint=args.checkpoint,
            device=args.device,
            data_dir=args.data_dir,
            progress=show_progress(args),
        )
    if not args.quiet:
        stored = "means" if path.suffix.lower() == ".npy" else codes.contents()
        size = f"{plural(len(codes), 'image')} of {images.name}, {plural(codes.dim, 'dimension')}"
        yield f"{size}: {stored}"
    yield path


COMMANDS = {"embed": _embed}
