"""The `vaelab` command: parses arguments into configs and calls `vaelab.commands`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from tqdm import tqdm

from vaelab import commands
from vaelab._version import __version__
from vaelab.analysis.compare import compare_runs
from vaelab.analysis.latents import PROJECTIONS
from vaelab.analysis.report import write_report
from vaelab.analysis.run_plots import plot_run
from vaelab.analysis.samplers import SAMPLERS
from vaelab.commands import MAX_FIGURE_IMAGES
from vaelab.data import DataConfig
from vaelab.errors import VaelabError
from vaelab.models import MODELS, ModelConfig
from vaelab.models.config import ACTIVATIONS, ARCHITECTURES, LIKELIHOOD_NAMES, NOISE_KINDS
from vaelab.training.config import (
    DEVICES,
    ON_NAN,
    OPTIMIZERS,
    SCHEDULES,
    OptimConfig,
    RunConfig,
    TrainConfig,
    read_config_file,
)
from vaelab.training.distributed import process_rank

logger = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  vaelab train                                    a VAE on the bundled 8x8 digits (~5 s on a CPU)
  vaelab train --dataset mnist --latent-dim 2 --epochs 20 --out runs/mnist-vae
  vaelab train --resume runs/mnist-vae --epochs 40
  vaelab sample runs/mnist-vae --n 100
  vaelab interpolate runs/mnist-vae --from 3 --to 7
  vaelab info runs/mnist-vae
"""


def _off_or(kind: Callable[[str], Any], word: str) -> Callable[[str], Any]:
    """An argparse type that reads `word` (or 'none') as None and anything else with `kind`."""

    def parse(text: str) -> Any:
        if text.lower() in (word, "none"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or '{word}', got '{text}'"
            ) from None

    return parse


def _seed(text: str) -> int:
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


def _image_size(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N or H W (whole numbers), got '{text}'"
        ) from None


@dataclass(frozen=True)
class Option:
    """One `vaelab train` flag and the config field it sets (in the group's section)."""

    flag: str
    field: str
    help: str
    type: Callable[[str], Any] = str
    metavar: str | None = None
    nargs: str | None = None
    choices: Sequence[str] | None = None
    switch: bool = False  # a boolean: --flag / --no-flag
    unset: str = "none"  # how the help shows a default of None


# The sections of RunConfig, as flag groups; the defaults shown in --help come from the dataclasses.
OPTION_GROUPS: dict[str, tuple[Option, ...]] = {
    "model": (
        Option("--model", "model", "vae, ae (plain autoencoder) or dae (denoising)",
               choices=tuple(MODELS)),
        Option("--latent-dim", "latent_dim", "size D of the latent code z", int, "D"),
        Option("--arch", "architecture", "encoder/decoder network (config key: architecture)",
               choices=ARCHITECTURES),
        Option("--hidden-dims", "hidden_dims", "mlp hidden layer sizes", int, "N", "+"),
        Option("--conv-channels", "conv_channels", "conv channels per stride-2 level", int, "C",
               "+"),
        Option("--activation", "activation", "nonlinearity", choices=ACTIVATIONS),
        Option("--likelihood", "likelihood", "decoder p(x|z): bernoulli needs data in [0, 1]",
               choices=LIKELIHOOD_NAMES),
        Option("--sigma", "sigma", "gaussian decoder std: a number, or 'learned'",
               _off_or(float, "learned"), "S", unset="learned"),
        Option("--beta", "beta", "weight of the KL term (beta-VAE)", float, "BETA"),
        Option("--noise", "noise", "dae corruption", choices=NOISE_KINDS),
        Option("--noise-level", "noise_level", "dae noise std, or the masked fraction", float,
               "LEVEL"),
    ),
    "data": (
        Option("--dataset", "dataset", "digits, mnist, fashion-mnist, or a path to an image "
               "folder, .npy or .npz file", metavar="NAME|PATH"),
        Option("--data-dir", "data_dir", "folder holding the MNIST IDX files", metavar="DIR",
               unset="$VAELAB_DATA, then the download cache"),
        Option("--image-size", "image_size", "resize every image to N x N or H x W",
               _image_size, "SIZE", "+", unset="as stored"),
        Option("--channels", "channels", "1 (grayscale) or 3 (RGB)", int, "C", unset="as stored"),
        Option("--val-fraction", "val_fraction", "share held out for validation", float, "F"),
        Option("--test-fraction", "test_fraction", "test share, for data without a test split",
               float, "F"),
        Option("--split-seed", "seed", "seed of the train/val/test split (config key: seed)", int,
               "N"),
        Option("--download", "download", "fetch mnist / fashion-mnist when missing",
               switch=True),
    ),
    "optim": (
        Option("--optimizer", "optimizer", "optimiser", choices=OPTIMIZERS),
        Option("--lr", "lr", "peak learning rate", float, "LR"),
        Option("--weight-decay", "weight_decay", "weight decay", float, "WD"),
        Option("--schedule", "schedule", "learning-rate decay after the warm-up",
               choices=SCHEDULES),
        Option("--warmup-steps", "warmup_steps", "steps of linear learning-rate warm-up", int,
               "N"),
        Option("--min-lr-ratio", "min_lr_ratio", "final lr as a fraction of --lr", float, "R"),
        Option("--grad-clip", "grad_clip", "max global gradient norm, or 'off'",
               _off_or(float, "off"), "NORM", unset="off"),
    ),
    "train": (
        Option("--epochs", "epochs", "passes over the training data", int, "N"),
        Option("--batch-size", "batch_size", "examples per step", int, "B"),
        Option("--kl-warmup", "kl_warmup_epochs",
               "epochs over which the KL weight rises from 0 (config key: kl_warmup_epochs)",
               float, "EPOCHS"),
        Option("--binarize", "binarize", "dynamic binarisation: a fresh Bernoulli draw of "
               "each batch", switch=True),
        Option("--seed", "seed", "seed of the weights, batch order and noise", _seed, "N"),
        Option("--device", "device", "auto picks CUDA when available", choices=DEVICES),
        Option("--amp", "amp", "bfloat16 mixed precision (CUDA only)", switch=True),
        Option("--early-stopping", "early_stopping",
               "stop after N epochs without a better validation loss, or 'off'",
               _off_or(int, "off"), "N", unset="off"),
        Option("--tensorboard", "tensorboard", "also log to RUN/tensorboard "
               "(pip install 'vaelab[tensorboard]')", switch=True),
        Option("--on-nan", "on_nan", "at a NaN/inf loss or gradient: stop, or skip the batch "
               "(skip costs a device sync per step)", choices=ON_NAN),
        Option("--checkpoint-every", "checkpoint_every",
               "also save last/ every N steps within an epoch, or 'off'",
               _off_or(int, "off"), "N", unset="off"),
    ),
}  # fmt: skip

GROUP_TITLES = {
    "model": "model ([model] in a config file)",
    "data": "data ([data])",
    "optim": "optimiser ([optim])",
    "train": "training loop ([train])",
}
DEFAULTS = {
    "model": ModelConfig(),
    "data": DataConfig(),
    "optim": OptimConfig(),
    "train": TrainConfig(),
}


def _default_text(section: str, option: Option) -> str:
    value = getattr(DEFAULTS[section], option.field)
    if value is None:
        return option.unset
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not a usage dump: `vaelab: error: ...`."""
        self.exit(2, f"vaelab: error: {message} (see '{self.prog} --help')\n")


def _add_quiet(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # SUPPRESS in the subcommands keeps `vaelab -q train` working: they do not reset the flag.
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only the output paths, warnings and errors")  # fmt: skip


def _add_train_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model into a run folder",
        description="Train a model into a run folder: checkpoints (best/, last/), config.json, "
        "metrics.jsonl and samples/reconstructions/interpolation PNGs. Every option has a "
        "default; a --config file sets them too, and the flags given here win.",
    )  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="RUN", help="run folder (default runs/<dataset>-<model>)")
    run.add_argument("--config", metavar="FILE",
                     help="TOML file with [model] [data] [optim] [train] tables, or a run's "
                     "config.json (or its folder) to repeat that run")  # fmt: skip
    run.add_argument("--resume", metavar="RUN", help="continue the run in this folder exactly "
                     "where it stopped (raise --epochs to train longer)")  # fmt: skip
    run.add_argument("--force", action="store_true", help="replace the run already in --out")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it only shows on a terminal anyway)")  # fmt: skip
    run.add_argument("--no-figures", action="store_true",
                     help="skip the samples/reconstructions/interpolation PNGs")  # fmt: skip
    _add_quiet(parser)
    for section, options in OPTION_GROUPS.items():
        group = parser.add_argument_group(GROUP_TITLES[section])
        for option in options:
            _add_option(group, section, option)


def _add_option(group: argparse._ArgumentGroup, section: str, option: Option) -> None:
    """A flag whose value, when given, lands in args as 'section.field' (absent otherwise)."""
    help_text = f"{option.help} (default: {_default_text(section, option)})"
    kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS,
                              "dest": f"{section}.{option.field}"}  # fmt: skip
    if option.switch:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs.update(type=option.type, nargs=option.nargs, choices=option.choices,
                      metavar=option.metavar)  # fmt: skip
    group.add_argument(option.flag, **kwargs)


def _add_model_arguments(parser: argparse.ArgumentParser, default_png: str) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder, or one of its checkpoint folders")
    parser.add_argument(
        "--out",
        metavar="PNG",
        help=f"where to write the PNG, or a folder for it (default RUN/{default_png})",
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="which checkpoint of a run folder (default: best)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run the model; auto picks CUDA when available "
                        "(default: auto)")  # fmt: skip
    _add_quiet(parser)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="which split of the run's dataset; it is an error if it is empty "
                        "(default: test, or val, then train, when test is empty)")  # fmt: skip
    parser.add_argument("--dataset", metavar="PATH",
                        help="the run's image folder, .npy or .npz file, if it moved since "
                        "training (default: the path in the run's config.json)")  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding the MNIST / Fashion-MNIST IDX files, for runs on "
                        "those (default: the run's, then $VAELAB_DATA, then the download "
                        "cache)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", epilog=EXAMPLES,
                     description="Train variational and standard autoencoders on images, and "
                     "look at what they learned.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    _add_quiet(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train_parser(subparsers)

    sample = subparsers.add_parser("sample", help="PNG grid of images decoded from the prior")
    _add_model_arguments(sample, "samples.png")
    sample.add_argument("--n", type=int, default=64,
                        help=f"number of samples, at most {MAX_FIGURE_IMAGES} "
                        "(default: 64)")  # fmt: skip
    sample.add_argument("--seed", type=_seed, default=0, help="seed of the codes (default: 0)")
    sample.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        default="prior",
        help="prior: z ~ N(0, I); gmm: a Gaussian mixture fitted to the run's "
        "training codes, an autoencoder's fairest chance (default: prior)",
    )
    sample.add_argument(
        "--dataset", metavar="PATH", help="with --sampler gmm: the run's data, if it moved"
    )
    sample.add_argument(
        "--data-dir", metavar="DIR", help="with --sampler gmm: folder with the MNIST IDX files"
    )

    recon = subparsers.add_parser(
        "reconstruct", help="images above their reconstructions",
        description="Images spread evenly over a split of the run's dataset, each above its "
        "reconstruction, in row pairs of up to 10.",
    )  # fmt: skip
    _add_model_arguments(recon, "reconstructions.png")
    recon.add_argument("--n", type=int,
                       help=f"number of images, at most {MAX_FIGURE_IMAGES} and the split's size "
                       "(default: 10, or the whole split when smaller)")  # fmt: skip
    _add_data_arguments(recon)

    interp = subparsers.add_parser(
        "interpolate", help="PNG strip along the latent path between two images"
    )
    _add_model_arguments(interp, "interpolation.png")
    interp.add_argument("--from", dest="start", metavar="INDEX|IMAGE",
                        help="an index into --split or an image file (default: 0)")  # fmt: skip
    interp.add_argument("--to", dest="end", metavar="INDEX|IMAGE",
                        help="an index or an image file (default: the next image of another "
                        "class)")  # fmt: skip
    interp.add_argument("--steps", type=int, default=10,
                        help=f"decoded points between the two ends, at most {MAX_FIGURE_IMAGES} "
                        "(default: 10)")  # fmt: skip
    interp.add_argument("--spherical", action="store_true",
                        help="slerp between the codes instead of a straight line")  # fmt: skip
    _add_data_arguments(interp)

    info = subparsers.add_parser(
        "info", help="a run's configuration and last metrics",
        description="A run's configuration, size and last metrics. When the checkpoint's "
        "weights cannot be read, the report is still printed (parameters counted from "
        "config.json), and then the command exits with code 1 and an error naming the problem.",
    )  # fmt: skip
    info.add_argument("run", metavar="RUN", help="run folder, or one of its checkpoint folders")
    info.add_argument("--checkpoint", choices=("best", "last"), default="best",
                      help="which checkpoint of a run folder (default: best)")  # fmt: skip
    info.add_argument("--json", action="store_true", help="print JSON instead")
    _add_quiet(info)
    _add_figure_commands(subparsers)
    _add_compare_command(subparsers)
    _add_serve_command(subparsers)
    return parser


def _add_serve_command(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="the latent-space explorer in the browser",
        description="A local web page to move through the latent space of one or more runs "
        "(two side by side, moving in step). Needs the explorer extra: "
        "pip install 'vaelab[explorer]'.",
    )  # fmt: skip
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two: side by side)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to run the models; auto picks CUDA when available",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=1_000_000,
        metavar="N",
        help="refuse request bodies larger than this (default: 1000000)",
    )
    _add_quiet(serve)


def _add_compare_command(subparsers: Any) -> None:
    compare = subparsers.add_parser(
        "compare", help="runs on the same data side by side: figure and table of measures",
        description="Latent maps, sample grids and measures (decodability of random codes, "
        "gaps, interpolation smoothness, a Frechet distance in a classifier's feature space) for "
        "runs trained on the same data; writes comparison.png, comparison.json and comparison.md.",
    )  # fmt: skip
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders on the same data")
    compare.add_argument("--sampler", choices=tuple(SAMPLERS), default="gmm",
                         help="gmm also samples from a Gaussian mixture fitted to each run's "
                         "training codes (default: gmm)")  # fmt: skip
    compare.add_argument(
        "--out",
        metavar="DIR",
        default="comparison",
        help="folder for comparison.png/.json/.md (default: ./comparison)",
    )
    compare.add_argument(
        "--samples", type=int, default=2000, help="random codes per measure (default: 2000)"
    )
    compare.add_argument(
        "--pairs", type=int, default=100, help="test pairs to interpolate between (default: 100)"
    )
    compare.add_argument("--seed", type=_seed, default=0, help="seed of codes and pairs")
    compare.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to run the models; auto picks CUDA when available",
    )
    compare.add_argument("--dataset", metavar="PATH", help="the runs' data, if it moved")
    compare.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST IDX files")
    _add_quiet(compare)


def _add_figure_commands(subparsers: Any) -> None:
    """`plot` (every figure of a run as PNGs) and `report` (one self-contained HTML page)."""
    plot = subparsers.add_parser(
        "plot", help="every figure of a run as PNGs",
        description="Latent map, manifold grid, prior samples, reconstructions, interpolations, "
        "latent traversals and training curves of a run, as PNG files.",
    )  # fmt: skip
    report = subparsers.add_parser(
        "report", help="one self-contained HTML report of a run",
        description="The figures of `vaelab plot` embedded in one HTML file, with the run's "
        "config, metrics and eval.json results (when present).",
    )  # fmt: skip
    plot.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN/plots)")
    report.add_argument("--out", metavar="FILE",
                        help="the HTML file, or a folder for report.html (default: "
                        "RUN/report.html); the PNGs go into plots/ beside it")  # fmt: skip
    for parser in (plot, report):
        parser.add_argument("run", metavar="RUN", help="run folder, or a checkpoint folder")
        parser.add_argument("--projection", choices=PROJECTIONS, default="pca",
                            help="how the latent map flattens more than two latent dimensions "
                            "(default: pca; tsne is slower)")  # fmt: skip
        parser.add_argument("--max-points", type=int, default=5000, metavar="N",
                            help="codes drawn in the latent map, a seeded random subset "
                            "(default: 5000)")  # fmt: skip
        parser.add_argument(
            "--seed",
            type=_seed,
            default=0,
            help="seed of the subset, samples and interpolation pairs",
        )
        parser.add_argument(
            "--checkpoint",
            choices=("best", "last"),
            default="best",
            help="which checkpoint of a run folder (default: best)",
        )
        parser.add_argument(
            "--device",
            choices=DEVICES,
            default="auto",
            help="where to run the model; auto picks CUDA when available",
        )
        _add_data_arguments(parser)
        _add_quiet(parser)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} for the config flags given on the command line."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, field = key.split(".", 1)
            overrides.setdefault(section, {})[field] = value
    size = overrides.get("data", {}).get("image_size")
    if size is not None and len(size) not in (1, 2):
        raise VaelabError(f"--image-size takes N or H W, got {len(size)} numbers")
    if size is not None and len(size) == 1:
        overrides["data"]["image_size"] = size[0]
    return overrides


def train_config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path, bool]:
    """Defaults <- --config file (or the resumed run) <- flags. Returns (config, run, resume)."""
    overrides = _overrides(args)
    if args.resume:
        if args.config or args.force:
            raise VaelabError("--resume takes the run's own config; drop --config and --force")
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise VaelabError("--out and --resume name different folders; give only --resume")
        run_dir = Path(args.resume)
        return commands.saved_run_config(run_dir).updated(overrides), run_dir, True
    base = RunConfig.from_dict(read_config_file(args.config)) if args.config else RunConfig()
    config = base.updated(overrides)
    if args.out:
        run_dir = Path(args.out)
    else:
        name = Path(config.data.dataset).stem or "data"
        run_dir = Path("runs") / f"{name}-{config.model.model}"
    if run_dir.suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise VaelabError(f"--out {run_dir} names the run folder, not an image file")
    return config, run_dir, False


def _train(args: argparse.Namespace) -> list[Path]:
    config, run_dir, resume = train_config_from_args(args)
    progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
    try:
        return commands.train_run(
            config,
            run_dir,
            resume=resume,
            force=args.force,
            progress=progress,
            figures=not args.no_figures,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(commands.saved_state(run_dir)) from None
    except torch.cuda.OutOfMemoryError:
        raise VaelabError(
            f"out of GPU memory; try a smaller --batch-size ({commands.saved_state(run_dir)})"
        ) from None


def _sample(args: argparse.Namespace) -> list[Path]:
    return [commands.sample(Path(args.run), n=args.n, seed=args.seed, out=args.out,
                            checkpoint=args.checkpoint, device=args.device,
                            sampler=args.sampler, dataset=args.dataset,
                            data_dir=args.data_dir)]  # fmt: skip


def _compare(args: argparse.Namespace) -> list[Path]:
    result = compare_runs([Path(p) for p in args.runs], Path(args.out), sampler=args.sampler,
                          n_samples=args.samples, n_pairs=args.pairs, seed=args.seed,
                          device=args.device, dataset=args.dataset,
                          data_dir=args.data_dir)  # fmt: skip
    return [result.figure, result.json, result.table]


def _reconstruct(args: argparse.Namespace) -> list[Path]:
    return [commands.reconstruct(Path(args.run), n=args.n, split=args.split, out=args.out,
                                 dataset=args.dataset, data_dir=args.data_dir,
                                 checkpoint=args.checkpoint, device=args.device)]  # fmt: skip


def _interpolate(args: argparse.Namespace) -> list[Path]:
    return [commands.interpolate(Path(args.run), start=args.start, end=args.end,
                                 steps=args.steps, spherical=args.spherical, split=args.split,
                                 out=args.out, dataset=args.dataset, data_dir=args.data_dir,
                                 checkpoint=args.checkpoint, device=args.device)]  # fmt: skip


def _info(args: argparse.Namespace) -> Iterator[str]:
    """The report first, then (with unreadable weights) the error: both reach the user."""
    report = commands.info(Path(args.run), checkpoint=args.checkpoint, as_json=args.json)
    yield report.text
    if report.error:
        raise VaelabError(report.error)


def _figure_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"projection": args.projection, "split": args.split, "checkpoint": args.checkpoint,
            "max_points": args.max_points, "dataset": args.dataset, "data_dir": args.data_dir,
            "device": args.device, "seed": args.seed}  # fmt: skip


def _plot(args: argparse.Namespace) -> list[Path]:
    return plot_run(Path(args.run), args.out, **_figure_options(args))


def _report(args: argparse.Namespace) -> list[Path]:
    return [write_report(Path(args.run), args.out, **_figure_options(args))]


def _serve(args: argparse.Namespace) -> list[Path]:
    try:
        from vaelab.explorer import serve
    except ImportError as error:
        raise VaelabError(
            f"vaelab serve needs the explorer extra ({error.name} is missing): "
            "pip install 'vaelab[explorer]'"
        ) from None
    if not 0 < args.port < 65536:
        raise VaelabError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_request_bytes <= 0:
        raise VaelabError(f"--max-request-bytes must be positive, got {args.max_request_bytes}")
    serve([Path(p) for p in args.runs], host=args.host, port=args.port, device=args.device,
          max_request_bytes=args.max_request_bytes)  # fmt: skip
    return []


COMMANDS: dict[str, Callable[[argparse.Namespace], Iterable[Path | str]]] = {
    "train": _train,
    "sample": _sample,
    "reconstruct": _reconstruct,
    "interpolate": _interpolate,
    "info": _info,
    "plot": _plot,
    "report": _report,
    "compare": _compare,
    "serve": _serve,
}


class _ConsoleHandler(logging.Handler):
    """Progress to stdout, warnings to stderr, both through tqdm so a progress bar stays whole.

    Keeping information off stderr means a failed command's stderr is its one error line.
    The streams are looked up at each record, so redirecting sys.stdout later still works.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                text = f"vaelab: {record.levelname.lower()}: {record.getMessage()}"
                tqdm.write(text, file=sys.stderr)
            else:
                tqdm.write(record.getMessage(), file=sys.stdout)
        except Exception:  # never let a broken console kill training; logging reports it
            self.handleError(record)


def _configure_logging(quiet: bool) -> None:
    package = logging.getLogger("vaelab")
    package.handlers = [_ConsoleHandler()]
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False


def _error(message: str) -> None:
    one_line = re.sub(r"\s*\n\s*", " ", message.strip())
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # wipe a half-drawn progress bar
    print(f"{clear}vaelab: error: {one_line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vaelab` with `argv` (default sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        main_process = process_rank() == 0  # under torchrun, only rank 0 talks
    except VaelabError as error:
        _error(str(error))
        return 1
    _configure_logging(quiet=args.quiet or not main_process)
    try:
        for output in COMMANDS[args.command](args):
            if main_process:
                print(output, flush=True)
    except BrokenPipeError:  # `vaelab info RUN | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except VaelabError as error:
        if main_process:  # every rank fails alike under torchrun; one message is enough
            _error(str(error))
        return 1
    except OSError as error:  # permissions, a full disk: name the file, skip the traceback
        _error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return 1
    except torch.cuda.OutOfMemoryError:
        _error("out of GPU memory; try a smaller --batch-size, --n or --samples")
        return 1
    except KeyboardInterrupt as interrupt:
        _error(f"interrupted{f'; {interrupt}' if str(interrupt) else ''}")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
