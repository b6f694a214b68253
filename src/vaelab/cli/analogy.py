"""`vaelab analogy`: style and class apart in a run conditional on labels (Kingma et al. 2014,
fig. 1): images of a split, each encoded once, then decoded with every class label."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.conditional_figures import analogy_grid, check_label_model
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
)
from vaelab.cli.figures import MAX_FIGURE_IMAGES, check_count, figure_output
from vaelab.errors import VaelabError
from vaelab.figures import save_image_grid, spread_indices
from vaelab.runs import check_run, open_run

ANALOGY_PNG = "analogy.png"
DEFAULT_ROWS = 10


def analogy(
    run: Path,
    *,
    n: int = DEFAULT_ROWS,
    split: str | None = None,
    out: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
) -> Path:
    """A PNG of n rows spread over the split (default test): an image, then its code decoded
    with each class label 0 .. K-1, the style kept and the class changed."""
    check_run(run)
    path = figure_output(run, out, ANALOGY_PNG)
    check_count(n, "--n")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    model = trained.model
    check_label_model(model, "vaelab analogy")
    if n * (model.classes + 1) > MAX_FIGURE_IMAGES:
        most = MAX_FIGURE_IMAGES // (model.classes + 1)
        raise VaelabError(
            f"--n {n} rows of {model.classes + 1} images is too large a figure: use --n {most} "
            "or less"
        )
    chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
    if n > len(chosen):
        raise VaelabError(
            f"--n {n} is more than the {chosen.split} split holds ({len(chosen)} images)"
        )
    rows = spread_indices(len(chosen), n)
    if chosen.y is not None:
        y = chosen.y[rows]
    elif model.classifies:
        y = torch.full((len(rows),), -1)  # its classifier infers them
    else:
        raise VaelabError(
            f"the {chosen.split} split of {chosen.dataset} has no labels, which this "
            f"{model.config.model} encodes its images with"
        )
    images = analogy_grid(model, chosen.x[rows], y)
    return save_image_grid(images, path, columns=model.classes + 1, value_range=trained.value_range)


def add_parsers(subparsers: Any) -> None:
    """The `analogy` subcommand."""
    parser = subparsers.add_parser(
        "analogy",
        help="images redrawn as every class: style and class apart (cvae, m2)",
        description="For a run conditional on class labels (cvae, m2): images spread over a "
        "split in the first column, each encoded once with its own label, then decoded with "
        "every class label 0 .. K-1 in the next K columns, so the style stays and the class "
        "changes (Kingma et al. 2014, figure 1).",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "--n",
        type=int,
        default=DEFAULT_ROWS,
        metavar="ROWS",
        help=f"number of images, one a row (default: {DEFAULT_ROWS})",
    )
    parser.add_argument(
        "--out",
        metavar="PNG",
        help=f"where to write the PNG, or a folder for it (default RUN/{ANALOGY_PNG})",
    )
    add_shared_arguments(parser, checkpoint=True, device=f"{MODEL_DEVICE} (default: auto)")
    add_shared_arguments(parser, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)
    add_quiet(parser)


def _analogy(args: argparse.Namespace) -> list[Path]:
    path = analogy(
        Path(args.run),
        n=args.n,
        split=args.split,
        out=args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    return [path]


COMMANDS = {"analogy": _analogy}
