"""The arguments several `vaelab` subcommands share, each declared once, and their help texts.

This module imports no torch (nor anything that does): `vaelab --help` and argument errors
build the parser with it and should answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError
from vaelab.files import check_folder_of

# `--device` choices: training.config.DEVICES (which imports torch), repeated here;
# tests/test_setup_and_help.py checks that the two agree.
DEVICES = ("auto", "cpu", "cuda")
# Help texts that several subcommands share word for word.
MODEL_DEVICE = "where to run the model; auto picks CUDA when available"
MODELS_DEVICE = "where to run the models; auto picks CUDA when available"
RUN_PATH = "run folder, one of its checkpoints, or a bundle"  # every command's RUN
RUN_DATASET = (
    "the run's image folder, .npy or .npz file, if it moved since training (default: the path "
    "in the run's config.json)"
)
RUN_DATA_DIR = (
    "folder holding the MNIST / Fashion-MNIST IDX files, for runs on those (default: the "
    "run's, then $VAELAB_DATA, then the download cache, then for Fashion-MNIST Debian's "
    "/usr/share/datasets/fashion-mnist)"
)


def parse_seed(text: str) -> int:
    """A seed every consumer accepts (torch, numpy and scikit-learn): 0 <= seed < 2**32."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to 2**32 - 1, got '{text}'"
        )
    return value


def parse_positive(text: str) -> int:
    """A whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return value


def add_quiet(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """-q/--quiet. SUPPRESS in the subcommands keeps `vaelab -q train` working: they do not
    reset the flag."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="print only the output paths, warnings and errors",
    )


def with_default(help_text: str, default: str) -> str:
    """`help_text` ending in "(default: ...)", unless it already says its default."""
    return help_text if "default" in help_text else f"{help_text} (default: {default})"


def add_shared_arguments(
    parser: argparse.ArgumentParser,
    *,
    checkpoint: bool = False,
    device: str | None = None,
    seed: str | None = None,
    split: bool = False,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> None:
    """The flags several subcommands take, each declared here once, in this order; `device`,
    `seed`, `dataset` and `data_dir` are the help texts (they differ between subcommands).
    Every flag's help ends with its default, as everywhere in `vaelab --help`. --checkpoint
    defaults to None, `scored_checkpoint`'s choice."""
    if checkpoint:
        parser.add_argument(
            "--checkpoint",
            choices=("best", "last"),
            default=None,
            help="which checkpoint of a run folder (default: best when the run held out a "
            "validation split, else last: without one, best is chosen by training loss)",
        )
    if device is not None:
        parser.add_argument(
            "--device", choices=DEVICES, default="auto", help=with_default(device, "auto")
        )
    if seed is not None:
        parser.add_argument("--seed", type=parse_seed, default=0, help=with_default(seed, "0"))
    if split:
        parser.add_argument(
            "--split",
            choices=("train", "val", "test"),
            help="which split of the run's dataset; it is an error if it is empty (default: "
            "test, or val, then train, when test is empty)",
        )
    if dataset is not None:
        parser.add_argument("--dataset", metavar="PATH", help=dataset)
    if data_dir is not None:
        parser.add_argument("--data-dir", metavar="DIR", help=data_dir)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw a progress bar: asked for, not quiet, and on a terminal."""
    return not args.no_progress and not args.quiet and sys.stderr.isatty()


def output_path(
    default: Path, out: str | Path | None, *, suffixes: tuple[str, ...], what: str
) -> Path:
    """The file a command writes: `default` without --out; --out itself when it names a file
    with one of `suffixes` (`what`, in words: "a .png file"); `default`'s name inside --out
    when that is an existing folder."""
    if out is None:
        return default  # its folder may not exist yet: a bundle's outputs, made on first write
    path = Path(out)
    if path.is_dir():
        path = path / default.name
    if path.suffix.lower() not in suffixes:
        raise VaelabError(f"--out {path} must be {what} (or an existing folder)")
    check_folder_of(path)
    return path
