"""`vaelab complete`: completions of the unseen part of images by a cvae trained with --observe
(Sohn et al. 2015, sec. 4.2): each image's observed quadrants, then several draws of the rest."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.conditional_figures import completes_images, completion_grid
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
)
from vaelab.cli.figures import check_count, check_image_arg, figure_output, is_index, split_index
from vaelab.cli.run_images import middle
from vaelab.data import load_image_file
from vaelab.errors import VaelabError
from vaelab.figures import save_image_grid
from vaelab.models import Autoencoder
from vaelab.models.conditions import parse_observed
from vaelab.runs import TrainedRun, check_run, open_run

COMPLETIONS_PNG = "completions.png"
DEFAULT_COMPLETIONS = 8


def check_observed(model: Autoencoder, observe: str) -> None:
    """A one-line error unless `model` is a cvae trained with --observe `observe` (compared by
    canonical name: "left" is "top-left,bottom-left")."""
    wanted = parse_observed(observe)
    if not completes_images(model):
        trained_on = "was trained on labels" if model.needs_labels else "is unconditional"
        raise VaelabError(
            f"this {model.config.model} {trained_on}: complete needs --observe, a cvae trained "
            f"with it (vaelab train --model cvae --observe {observe})"
        )
    trained_for = parse_observed(model.config.observe)
    if wanted != trained_for:
        raise VaelabError(
            f"--observe {observe} ({wanted}) is not what this cvae was trained for: it observes "
            f"{trained_for}; pass --observe {trained_for}"
        )


def load_images(
    trained: TrainedRun,
    values: Sequence[str],
    *,
    split: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> torch.Tensor:
    """(len(values), C, H, W): each value an index into the split (default test) or an image
    file, resized to the run's images."""
    shape = tuple(trained.config.model.data_shape)
    chosen = None
    if any(is_index(value) for value in values):
        chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
    images = [
        chosen.x[split_index(value, chosen)] if is_index(value) else load_image_file(value, shape)
        for value in values
    ]
    return torch.stack(images)


def complete(
    run: Path,
    images: Sequence[str],
    *,
    observe: str,
    n: int = DEFAULT_COMPLETIONS,
    seed: int = 0,
    out: str | None = None,
    split: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
) -> Path:
    """A PNG with a row per image: its observed part (the rest mid-grey), then n completions
    drawn from p(x_unobserved | z, x_observed), z ~ p(z | x_observed)."""
    check_run(run)
    path = figure_output(run, out, COMPLETIONS_PNG)
    check_count(n, "--n")
    parse_observed(observe)  # an unknown name fails before the run is loaded
    if not images:
        raise VaelabError("pass at least one IMAGE: an image file or an index into the split")
    for value in images:
        check_image_arg("IMAGE", value)
    trained = open_run(run, checkpoint=checkpoint, device=device)
    check_observed(trained.model, observe)
    x = load_images(trained, images, split=split, dataset=dataset, data_dir=data_dir)
    grid = completion_grid(trained.model, x, n, seed=seed, fill=middle(trained.value_range))
    return save_image_grid(grid, path, columns=n + 1, value_range=trained.value_range)


def add_parsers(subparsers: Any) -> None:
    """The `complete` subcommand."""
    parser = subparsers.add_parser(
        "complete",
        help="completions of the unseen part of images (a cvae with --observe)",
        description="For a cvae trained with --observe QUADRANTS: a row per image, its "
        "observed quadrants (the rest shown mid-grey) followed by --n completions, each "
        "keeping the observed pixels and drawing the rest from the model.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="an image file (PNG, JPEG, ...; resized to the run's images) or an index into "
        "--split (0 is its first image, -1 its last)",
    )
    parser.add_argument(
        "--observe",
        required=True,
        metavar="QUADRANTS",
        help="the quadrants the run was trained to observe, as given to vaelab train: e.g. "
        "left, top-left, 3-quadrants",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=DEFAULT_COMPLETIONS,
        help=f"completions of each image (default: {DEFAULT_COMPLETIONS})",
    )
    parser.add_argument(
        "--out",
        metavar="PNG",
        help=f"where to write the PNG, or a folder for it (default RUN/{COMPLETIONS_PNG})",
    )
    add_shared_arguments(parser, checkpoint=True, device=f"{MODEL_DEVICE} (default: auto)")
    add_shared_arguments(parser, seed="seed of the completions (default: 0)")
    add_shared_arguments(parser, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)
    add_quiet(parser)


def _complete(args: argparse.Namespace) -> list[Path]:
    path = complete(
        Path(args.run),
        args.images,
        observe=args.observe,
        n=args.n,
        seed=args.seed,
        out=args.out,
        split=args.split,
        dataset=args.dataset,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    return [path]


COMMANDS = {"complete": _complete}
