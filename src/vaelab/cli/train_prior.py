"""`vaelab train-prior RUN`: fit a VQ-VAE run's gated PixelCNN prior (the second stage)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    add_quiet,
    add_shared_arguments,
    parse_positive,
    show_progress,
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


# The settings of a fresh prior, and their defaults; on --resume the saved ones hold.
SETTINGS = {"batch_size": 128, "lr": 1e-3, "layers": 6, "channels": 64, "kernel": 3}
DEFAULT_EPOCHS = 20


def _train_prior(args: argparse.Namespace) -> Iterator[str | Path]:
    from vaelab.errors import VaelabError
    from vaelab.models.pixelcnn import PixelCNNConfig
    from vaelab.training.code_prior import PriorTraining
    from vaelab.training.prior_trainer import train_prior

    given = [name for name in SETTINGS if getattr(args, name) is not None]
    network = training = None
    if args.resume and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise VaelabError(f"{flags}: a resumed prior keeps its settings; only --epochs may change")
    if not args.resume:
        value = {name: getattr(args, name) or default for name, default in SETTINGS.items()}
        network = PixelCNNConfig(
            codebook_size=1,  # sized for the run's codes by train_prior
            grid=(1, 1),
            channels=value["channels"],
            layers=value["layers"],
            kernel=value["kernel"],
        )
        training = PriorTraining(
            epochs=args.epochs or DEFAULT_EPOCHS,
            batch_size=value["batch_size"],
            lr=value["lr"],
            seed=args.seed,
        )
    result = train_prior(
        Path(args.run),
        network,
        training,
        epochs=args.epochs,
        resume=args.resume,
        force=args.force,
        checkpoint=args.checkpoint,
        device=args.device,
        data_dir=args.data_dir,
        threads=args.threads,
        amp=args.amp,
        progress=show_progress(args),
    )
    if not args.quiet:
        yield (
            f"prior fitted: {result.epochs} epochs, best held-out NLL {result.best_nll:.3f} "
            "nats per code grid"
        )
    yield result.folder


def add_parsers(subparsers: Any) -> None:
    """The `train-prior` subcommand."""
    parser = subparsers.add_parser(
        "train-prior",
        help="fit a vqvae run's PixelCNN prior over its codes",
        description="Fit a gated PixelCNN (van den Oord et al. 2016) to the code grids of a "
        "vqvae run's training images, into RUN/prior/ (config.json, metrics.jsonl, best/, "
        "last/). From then on sample, eval, the figures and the explorer draw and score codes "
        "with it. Ctrl-C saves; --resume continues bit for bit (with the saved settings; "
        "--epochs sets the new total).",
    )
    parser.add_argument("run", metavar="RUN", help="a vqvae run folder")
    parser.add_argument(
        "--epochs",
        type=parse_positive,
        help=f"epochs over the training codes; with --resume, the new total (default: "
        f"{DEFAULT_EPOCHS}, or the saved total)",
    )
    parser.add_argument("--batch-size", type=parse_positive, help="(default: 128)")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 PixelCNN, fp32 weights and loss, where the device has native bfloat16 "
        "(a CPU with AVX512-BF16 or AMX, or CUDA); like --threads, a resumed fit may change it",
    )
    parser.add_argument("--lr", type=_positive_float, help="Adam's learning rate (default: 0.001)")
    parser.add_argument("--layers", type=parse_positive, help="gated layers (default: 6)")
    parser.add_argument("--channels", type=parse_positive, help="channels per layer (default: 64)")
    parser.add_argument(
        "--kernel", type=parse_positive, help="odd width of each layer's kernel (default: 3)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the saved prior")
    parser.add_argument("--force", action="store_true", help="replace a saved prior")
    parser.add_argument(
        "--threads",
        type=parse_positive,
        metavar="N",
        help="CPU threads for this process (default: torch's, one per core)",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        device=MODEL_DEVICE,
        seed="seed of the batch order, the binarisation and the initial weights",
        data_dir=RUN_DATA_DIR,
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet(parser)


COMMANDS = {"train-prior": _train_prior}
