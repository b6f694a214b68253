"""The `vaelab` command: parses arguments into configs and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tqdm.contrib.logging import logging_redirect_tqdm

from vaelab import commands
from vaelab.errors import VaelabError
from vaelab.training.config import RunConfig, read_config_file

logger = logging.getLogger("vaelab")


def _sigma(text: str) -> float | None:
    if text == "learned":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'learned', got '{text}'") from None


def _optional_int(text: str) -> int | None:
    return None if text == "none" else int(text)


@dataclass(frozen=True)
class Option:
    """One `vaelab train` flag and the config field it sets."""

    flag: str
    section: str
    field: str
    help: str
    type: Callable[[str], Any] | None = None
    nargs: str | int | None = None
    choices: Sequence[str] | None = None
    action: str | None = None


TRAIN_OPTIONS = (
    Option("--model", "model", "model", "vae, ae (standard) or dae (denoising)", str,
           choices=("vae", "ae", "dae")),
    Option("--latent-dim", "model", "latent_dim", "size of the latent code z (default 2)", int),
    Option("--arch", "model", "architecture", "mlp or conv", str, choices=("mlp", "conv")),
    Option("--hidden-dims", "model", "hidden_dims", "mlp hidden sizes (default 400)", int, "+"),
    Option("--conv-channels", "model", "conv_channels", "conv channels per level", int, "+"),
    Option("--activation", "model", "activation", "relu, tanh, elu, gelu, silu, leaky_relu", str),
    Option("--likelihood", "model", "likelihood", "bernoulli (data in [0,1]) or gaussian", str,
           choices=("bernoulli", "gaussian")),
    Option("--sigma", "model", "sigma", "gaussian std: a number, or 'learned' (default)", _sigma),
    Option("--beta", "model", "beta", "KL weight of the VAE (beta-VAE); default 1", float),
    Option("--noise", "model", "noise", "dae corruption: gaussian or mask", str,
           choices=("gaussian", "mask")),
    Option("--noise-level", "model", "noise_level", "dae noise std or masked fraction", float),
    Option("--dataset", "data", "dataset",
           "digits (default), mnist, fashion-mnist, or an image folder / .npy / .npz", str),
    Option("--data-dir", "data", "data_dir", "folder with MNIST IDX files ($VAELAB_DATA)", str),
    Option("--image-size", "data", "image_size", "resize images to N or H W", int, "+"),
    Option("--channels", "data", "channels", "1 (grayscale) or 3 (RGB)", int),
    Option("--val-fraction", "data", "val_fraction", "held-out validation share (0.1)", float),
    Option("--test-fraction", "data", "test_fraction", "test share without a test split", float),
    Option("--split-seed", "data", "seed", "seed of the train/val/test split (default: --seed)",
           int),
    Option("--no-download", "data", "download", "never download datasets", action="store_false"),
    Option("--optimizer", "optim", "optimizer", "adam or adamw", str, choices=("adam", "adamw")),
    Option("--lr", "optim", "lr", "learning rate (1e-3)", float),
    Option("--weight-decay", "optim", "weight_decay", "weight decay (0)", float),
    Option("--schedule", "optim", "schedule", "constant, cosine or linear", str,
           choices=("constant", "cosine", "linear")),
    Option("--warmup-steps", "optim", "warmup_steps", "linear learning-rate warm-up steps", int),
    Option("--min-lr-ratio", "optim", "min_lr_ratio", "final lr / lr for decays (0)", float),
    Option("--grad-clip", "optim", "grad_clip", "max gradient norm, or none", float),
    Option("--epochs", "train", "epochs", "passes over the training data (50)", int),
    Option("--batch-size", "train", "batch_size", "examples per step (128)", int),
    Option("--kl-warmup", "train", "kl_warmup_epochs", "epochs of linear KL warm-up (0)", float),
    Option("--binarize", "train", "binarize", "dynamically binarise each batch",
           action="store_true"),
    Option("--seed", "train", "seed", "random seed (0)", int),
    Option("--device", "train", "device", "auto, cpu or cuda", str,
           choices=("auto", "cpu", "cuda")),
    Option("--amp", "train", "amp", "bfloat16 mixed precision on CUDA", action="store_true"),
    Option("--early-stopping", "train", "early_stopping",
           "stop after N epochs without a better validation loss", _optional_int),
    Option("--tensorboard", "train", "tensorboard", "also log to TensorBoard",
           action="store_true"),
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not a usage dump: `vaelab: error: ...`."""
        self.exit(2, f"vaelab: error: {message} (see '{self.prog} --help')\n")


def _add_train_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="train a model into a run folder")
    parser.add_argument("--config", help="TOML file, or a run's config.json, to start from")
    parser.add_argument("--out", help="run folder (default runs/<dataset>-<model>)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    parser.add_argument("--force", action="store_true", help="overwrite the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-figures", action="store_true",
                        help="skip writing samples/reconstructions/interpolation PNGs")  # fmt: skip
    for option in TRAIN_OPTIONS:
        kwargs: dict[str, Any] = {"help": option.help, "default": argparse.SUPPRESS,
                                  "dest": f"{option.section}.{option.field}"}  # fmt: skip
        if option.action:
            kwargs["action"] = option.action
        else:
            kwargs.update(type=option.type, nargs=option.nargs, choices=option.choices)
        parser.add_argument(option.flag, **kwargs)


def _add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder or checkpoint folder")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vaelab {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_parser(subparsers)

    sample = subparsers.add_parser("sample", help="PNG grid of samples from the prior")
    _add_run_argument(sample)
    sample.add_argument("--n", type=int, default=64, help="number of samples (64)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", help="PNG path (default RUN/samples.png)")

    recon = subparsers.add_parser("reconstruct", help="originals above their reconstructions")
    _add_run_argument(recon)
    recon.add_argument("--n", type=int, default=10, help="number of images (10)")
    recon.add_argument("--split", choices=("train", "val", "test"), default="test")
    recon.add_argument("--data-dir", help="where the run's dataset lives now")
    recon.add_argument("--out", help="PNG path (default RUN/reconstructions.png)")

    interp = subparsers.add_parser("interpolate", help="PNG strip between two inputs")
    _add_run_argument(interp)
    interp.add_argument("--from", dest="start", help="dataset index or image file (default 0)")
    interp.add_argument(
        "--to", dest="end", help="dataset index or image file (default: next of another class)"
    )
    interp.add_argument("--steps", type=int, default=10)
    interp.add_argument("--spherical", action="store_true", help="slerp instead of a line")
    interp.add_argument("--split", choices=("train", "val", "test"), default="test")
    interp.add_argument("--data-dir", help="where the run's dataset lives now")
    interp.add_argument("--out", help="PNG path (default RUN/interpolation.png)")

    info = subparsers.add_parser("info", help="a run's config and last metrics")
    info.add_argument("run", help="run folder or checkpoint folder")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _version() -> str:
    from vaelab._version import __version__

    return __version__


def train_config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path, bool]:
    """Defaults <- --config file (or the resumed run) <- flags. Returns (config, run, resume)."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, field = key.split(".", 1)
            overrides.setdefault(section, {})[field] = value
    if "train" in overrides and "seed" in overrides["train"]:
        overrides.setdefault("data", {}).setdefault("seed", overrides["train"]["seed"])
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise VaelabError("--out and --resume name different folders; give only --resume")
        base = commands.saved_run_config(Path(args.resume))
        run_dir = Path(args.resume)
    else:
        base = RunConfig.from_dict(read_config_file(args.config)) if args.config else RunConfig()
        run_dir = None
    config = base.updated(overrides)
    if run_dir is None:
        name = Path(config.data.dataset).stem or "data"
        run_dir = Path(args.out) if args.out else Path("runs") / f"{name}-{config.model.model}"
    return config, run_dir, bool(args.resume)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)  # fmt: skip
    try:
        if args.command == "train":
            config, run_dir, resume = train_config_from_args(args)
            with logging_redirect_tqdm():  # epoch summaries print above the progress bar
                paths = commands.train_run(config, run_dir, resume=resume, force=args.force,
                                           progress=not args.no_progress and not args.quiet,
                                           figures=not args.no_figures)  # fmt: skip
        elif args.command == "info":
            print(commands.info(Path(args.run), as_json=args.json))
            return 0
        else:
            paths = [COMMANDS[args.command](args)]
    except VaelabError as error:
        print(f"vaelab: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # permissions, a full disk: name the file, skip the traceback
        print(f"vaelab: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "),
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("vaelab: interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr)
        return 130
    for path in paths:
        print(path)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Path]] = {
    "sample": lambda a: commands.sample(Path(a.run), n=a.n, seed=a.seed, out=a.out,
                                        checkpoint=a.checkpoint, device=a.device),
    "reconstruct": lambda a: commands.reconstruct(Path(a.run), n=a.n, split=a.split, out=a.out,
                                                  data_dir=a.data_dir, checkpoint=a.checkpoint,
                                                  device=a.device),
    "interpolate": lambda a: commands.interpolate(Path(a.run), start=a.start, end=a.end,
                                                  steps=a.steps, spherical=a.spherical,
                                                  split=a.split, out=a.out, data_dir=a.data_dir,
                                                  checkpoint=a.checkpoint, device=a.device),
}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
