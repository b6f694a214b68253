"""`vaelab train`'s flags: one table of options, each setting a field of a RunConfig section,
and the parser that reads them into a RunConfig."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.bundles import is_bundle, locate
from vaelab.cli.arguments import add_quiet, parse_seed
from vaelab.data import DataConfig
from vaelab.data.config import VAL_SPLITS
from vaelab.errors import VaelabError
from vaelab.models import MODELS, ModelConfig
from vaelab.models.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    AUTOREGRESSIVE_KINDS,
    CODEBOOK_UPDATES,
    DIP_TYPES,
    FLOWS,
    LIKELIHOOD_NAMES,
    NOISE_KINDS,
    OBJECTIVES,
    PRIORS,
)
from vaelab.training.checkpoint import CONFIG_FILE, read_config, resolve_checkpoint
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
from vaelab.training.runs import LAST, is_run_folder


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


def _image_size(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N or H W (whole numbers), got '{text}'"
        ) from None


def _whole_numbers(text: str) -> list[int]:
    """ "64,32" -> [64, 32]: a list, as a config file gives it."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers (64,32), got '{text}'"
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
        Option(
            "--model",
            "model",
            "vae, ae (plain autoencoder), dae (denoising), vqvae (vector-quantised; fit "
            "its prior afterwards with vaelab train-prior), the disentangling VAEs btcvae "
            "(beta-TCVAE), factorvae and dipvae, cvae (conditional on the label, or on "
            "--observe quadrants), m2 (semi-supervised; with --labelled N), or the "
            "hierarchies of --latent-dims layers hvae (bottom-up inference, Burda et al. 2015) "
            "and ladder (top-down, Sønderby et al. 2016)",
            choices=tuple(MODELS),
        ),
        Option(
            "--latent-dim",
            "latent_dim",
            "size D of the latent code z (a vqvae's is --code-dim x its code grid)",
            int,
            "D",
        ),
        Option(
            "--latent-dims",
            "latent_dims",
            "hvae, ladder: the sizes of the stochastic layers, from the one next to x up, "
            "comma-separated (64,32); the code is their values side by side",
            _whole_numbers,
            metavar="D1,D2,...",
            unset="100,50",
        ),
        Option(
            "--arch",
            "architecture",
            "encoder/decoder network (config key: architecture)",
            choices=ARCHITECTURES,
        ),
        Option("--hidden-dims", "hidden_dims", "mlp hidden layer sizes", int, "N", "+"),
        Option(
            "--conv-channels", "conv_channels", "conv channels per stride-2 level", int, "C", "+"
        ),
        Option("--activation", "activation", "nonlinearity", choices=ACTIVATIONS),
        Option(
            "--likelihood",
            "likelihood",
            "decoder p(x|z): bernoulli needs data in [0, 1]",
            choices=LIKELIHOOD_NAMES,
        ),
        Option(
            "--sigma",
            "sigma",
            "gaussian decoder std: a number, or 'learned'",
            _off_or(float, "learned"),
            "S",
            unset="learned",
        ),
        Option(
            "--autoregressive",
            "autoregressive",
            "the decoder also sees the pixels before "
            "each one: local (a masked 7x7 convolution, PixelCNN-style), local-z (that, also "
            "reading the decoder's own logits), gated (--ar-layers gated masked layers, van "
            "den Oord et al. 2016) or linear (all of them); decoding then takes a step per "
            "pixel",
            choices=AUTOREGRESSIVE_KINDS,
        ),
        Option(
            "--ar-layers",
            "ar_layers",
            "--autoregressive gated: how many gated masked layers",
            int,
            "N",
        ),
        Option(
            "--prior",
            "prior",
            "vae, hvae, ladder: p(z) (of the top layer): normal N(0, I), vamp (a mixture of "
            "the posteriors of learned pseudo-inputs, Tomczak & Welling 2018) or mog (a "
            "learned mixture of Gaussians)",
            choices=PRIORS,
        ),
        Option("--pseudo-inputs", "pseudo_inputs", "--prior vamp: pseudo-inputs K", int, "K"),
        Option("--components", "components", "--prior mog: mixture components K", int, "K"),
        Option(
            "--flow",
            "flow",
            "vae: flow steps after the Gaussian posterior: iaf (inverse autoregressive, Kingma "
            "et al. 2016) or planar (Rezende & Mohamed 2015)",
            choices=FLOWS,
        ),
        Option("--flow-steps", "flow_steps", "--flow: how many steps", int, "N"),
        Option("--beta", "beta", "weight of the KL term (beta-VAE)", float, "BETA"),
        Option(
            "--objective",
            "objective",
            "vae bound: elbo, or iwae (importance-weighted, Burda et al. 2015)",
            choices=OBJECTIVES,
        ),
        Option(
            "--k", "k", "vae: samples of z per example (iwae's k; elbo averages them)", int, "K"
        ),
        Option("--noise", "noise", "dae corruption", choices=NOISE_KINDS),
        Option(
            "--noise-level", "noise_level", "dae noise std, or the masked fraction", float, "LEVEL"
        ),
        Option("--codebook-size", "codebook_size", "vqvae: entries K of the codebook", int, "K"),
        Option(
            "--code-dim",
            "code_dim",
            "vqvae: size of each codebook entry (and grid vector)",
            int,
            "D",
        ),
        Option(
            "--codebook-update",
            "codebook_update",
            "vqvae: ema (moving averages, the paper's appendix) or loss (the codebook loss); "
            "both restart unused entries at encoder outputs",
            choices=CODEBOOK_UPDATES,
        ),
        Option("--commitment", "commitment", "vqvae: weight of the commitment loss", float, "BETA"),
        Option(
            "--capacity",
            "capacity",
            "vae: Burgess et al.'s capacity annealing: hold the KL at a target rising from 0 to "
            "C nats over --kl-warmup (0: off)",
            float,
            "C",
        ),
        Option(
            "--capacity-gamma",
            "capacity_gamma",
            "vae: weight of |KL - C| under --capacity",
            float,
            "GAMMA",
        ),
        Option(
            "--alpha",
            "alpha",
            "btcvae: weight of the index-code mutual information (--beta weighs the total "
            "correlation)",
            float,
            "ALPHA",
        ),
        Option(
            "--gamma",
            "gamma",
            "btcvae: weight of the dimension-wise KL; factorvae: of the total correlation",
            _off_or(float, "default"),
            "GAMMA",
            unset="1 (btcvae), 40 (factorvae)",
        ),
        Option("--dip-type", "dip_type", "dipvae: i (Cov of the means) or ii", choices=DIP_TYPES),
        Option(
            "--lambda-od", "lambda_od", "dipvae: weight of the off-diagonal penalty", float, "L"
        ),
        Option(
            "--lambda-d",
            "lambda_d",
            "dipvae: weight of the diagonal penalty",
            _off_or(float, "default"),
            "L",
            unset="10 x --lambda-od (i), --lambda-od (ii)",
        ),
        Option(
            "--discriminator-hidden",
            "discriminator_hidden",
            "factorvae: the discriminator's hidden layer sizes",
            int,
            "N",
            "+",
        ),
        Option(
            "--discriminator-lr",
            "discriminator_lr",
            "factorvae: the discriminator's learning rate (constant; Adam betas 0.5, 0.9)",
            float,
            "LR",
        ),
        Option(
            "--observe",
            "observe",
            "cvae: condition on these quadrants of each image instead of its label, and learn "
            "to complete the rest: top-left, top-right, bottom-left, bottom-right, or top, "
            "bottom, left, right, 1-quadrant, 2-quadrants, 3-quadrants (Pyro's CVAE "
            "tutorial's), comma-separated",
            metavar="QUADRANTS",
        ),
        Option(
            "--conditional-prior",
            "conditional_prior",
            "cvae: a learned prior p(z|y) (Sohn et al.'s prior network) instead of N(0, I)",
            switch=True,
        ),
        Option(
            "--classifier-weight",
            "classifier_weight",
            "m2: weight of the mean classification loss of the labelled images (Kingma et "
            "al.'s alpha = 0.1 N per labelled image)",
            _off_or(float, "default"),
            "W",
            unset="0.1 N / N_labelled",
        ),
    ),
    "data": (
        Option(
            "--dataset",
            "dataset",
            "digits, mnist, fashion-mnist, shapes (dSprites-like, with known factors; "
            "--image-size 64, 32 or 16 picks its grid), or a path to an image folder, .npy "
            "or .npz file",
            metavar="NAME|PATH",
        ),
        Option(
            "--data-dir",
            "data_dir",
            "folder holding the MNIST IDX files",
            metavar="DIR",
            unset="$VAELAB_DATA, then the download cache, then (Fashion-MNIST) "
            "Debian's /usr/share/datasets/fashion-mnist",
        ),
        Option(
            "--image-size",
            "image_size",
            "resize every image to N x N or H x W",
            _image_size,
            "SIZE",
            "+",
            unset="as stored",
        ),
        Option("--channels", "channels", "1 (grayscale) or 3 (RGB)", int, "C", unset="as stored"),
        Option("--val-fraction", "val_fraction", "share held out for validation", float, "F"),
        Option(
            "--val-split",
            "val_split",
            "which images validation holds out: random (seeded by --split-seed) or last (the "
            "end of the training pool: MNIST's last 10,000 with --val-fraction 1/6)",
            choices=VAL_SPLITS,
        ),
        Option(
            "--test-fraction",
            "test_fraction",
            "test share, for data without a test split",
            float,
            "F",
        ),
        Option(
            "--split-seed", "seed", "seed of the train/val/test split (config key: seed)", int, "N"
        ),
        Option("--download", "download", "fetch mnist / fashion-mnist when missing", switch=True),
        Option(
            "--binarize",
            "binarize",
            "dynamic binarisation: a fresh Bernoulli draw of each batch",
            switch=True,
        ),
        Option(
            "--labelled",
            "labelled",
            "m2: keep the labels of N training images (balanced over the classes, chosen by "
            "--split-seed; saved in the run as labelled.json) and hide the rest",
            int,
            "N",
            unset="every label",
        ),
    ),
    "optim": (
        Option("--optimizer", "optimizer", "optimiser", choices=OPTIMIZERS),
        Option("--lr", "lr", "peak learning rate", float, "LR"),
        Option("--weight-decay", "weight_decay", "weight decay", float, "WD"),
        Option(
            "--schedule", "schedule", "learning-rate decay after the warm-up", choices=SCHEDULES
        ),
        Option("--warmup-steps", "warmup_steps", "steps of linear learning-rate warm-up", int, "N"),
        Option("--min-lr-ratio", "min_lr_ratio", "final lr as a fraction of --lr", float, "R"),
        Option(
            "--grad-clip",
            "grad_clip",
            "max global gradient norm, or 'off'",
            _off_or(float, "off"),
            "NORM",
            unset="off",
        ),
    ),
    "train": (
        Option("--epochs", "epochs", "passes over the training data", int, "N"),
        Option("--batch-size", "batch_size", "examples per step", int, "B"),
        Option(
            "--kl-warmup",
            "kl_warmup_epochs",
            "epochs over which the KL weight rises from 0 (config key: kl_warmup_epochs)",
            float,
            "EPOCHS",
        ),
        Option("--seed", "seed", "seed of the weights, batch order and noise", parse_seed, "N"),
        Option("--device", "device", "auto picks CUDA when available", choices=DEVICES),
        Option(
            "--threads",
            "threads",
            "CPU threads for this process; use 1 per run when several runs share a machine",
            int,
            "N",
            unset="torch's default",
        ),
        Option(
            "--amp",
            "amp",
            "bfloat16 networks, fp32 weights and loss (CUDA, or a CPU with AVX512-BF16/AMX)",
            switch=True,
        ),
        Option(
            "--early-stopping",
            "early_stopping",
            "stop after N epochs without a better validation loss, or 'off'",
            _off_or(int, "off"),
            "N",
            unset="off",
        ),
        Option(
            "--tensorboard",
            "tensorboard",
            "also log to RUN/tensorboard (pip install 'vaelab[tensorboard]')",
            switch=True,
        ),
        Option(
            "--on-nan",
            "on_nan",
            "at a NaN/inf loss or gradient: stop, or skip the batch "
            "(skip costs a device sync per step)",
            choices=ON_NAN,
        ),
        Option(
            "--checkpoint-every",
            "checkpoint_every",
            "also save last/ every N steps within an epoch, or 'off'",
            _off_or(int, "off"),
            "N",
            unset="off",
        ),
    ),
}

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


def add_train_parser(subparsers: Any) -> None:
    """The `train` subcommand: the run options, then one group of flags per config section."""
    parser = subparsers.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a model into a run folder: checkpoints (best/, last/), config.json, "
        "metrics.jsonl and samples/reconstructions/interpolation PNGs. Every option has a "
        "default; a --config file sets them too, and the flags given here win.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="RUN", help="run folder (default runs/<dataset>-<model>)")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with [model] [data] [optim] [train] tables, or a run's config.json (or "
        "its folder, or a bundle) to repeat that run",
    )
    run.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in this folder exactly where it stopped (raise --epochs to "
        "train longer)",
    )
    run.add_argument("--force", action="store_true", help="replace the run already in --out")
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it only shows on a terminal anyway)",
    )
    run.add_argument(
        "--no-figures",
        action="store_true",
        help="skip the samples/reconstructions/interpolation PNGs",
    )
    add_quiet(parser)
    for section, options in OPTION_GROUPS.items():
        group = parser.add_argument_group(GROUP_TITLES[section])
        for option in options:
            _add_option(group, section, option)


def _add_option(group: argparse._ArgumentGroup, section: str, option: Option) -> None:
    """A flag whose value, when given, lands in args as 'section.field' (absent otherwise)."""
    help_text = f"{option.help} (default: {_default_text(section, option)})"
    kwargs: dict[str, Any] = {
        "help": help_text,
        "default": argparse.SUPPRESS,
        "dest": f"{section}.{option.field}",
    }
    if option.switch:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs.update(
            type=option.type, nargs=option.nargs, choices=option.choices, metavar=option.metavar
        )
    group.add_argument(option.flag, **kwargs)


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


def saved_run_config(run_dir: Path) -> RunConfig:
    """The configuration a run was trained with (from its last checkpoint), to resume it."""
    if not run_dir.is_dir():
        raise VaelabError(f"cannot resume {run_dir}: no such folder")
    if not is_run_folder(run_dir):
        raise VaelabError(f"nothing to resume: {run_dir} holds no vaelab run")
    return read_config(resolve_checkpoint(run_dir, prefer=LAST))


def config_source(path: str) -> Path:
    """The file `--config` names: a TOML file, a run's config.json or folder, or a bundle's
    config.json (a bundle folder or .zip, checked and unpacked as every command does)."""
    if is_bundle(path):
        return locate(path).checkpoint / CONFIG_FILE
    return Path(path)


def train_config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path, bool]:
    """Defaults <- --config file (or the resumed run) <- flags. Returns (config, run, resume)."""
    overrides = _overrides(args)
    if args.resume:
        if args.config or args.force:
            raise VaelabError("--resume takes the run's own config; drop --config and --force")
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise VaelabError("--out and --resume name different folders; give only --resume")
        run_dir = Path(args.resume)
        return saved_run_config(run_dir).updated(overrides), run_dir, True
    base = (
        RunConfig.from_dict(read_config_file(config_source(args.config)))
        if args.config
        else RunConfig()
    )
    config = base.updated(overrides)
    if args.out:
        run_dir = Path(args.out)
    else:
        name = Path(config.data.dataset).stem or "data"
        run_dir = Path("runs") / f"{name}-{config.model.model}"
    if run_dir.suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise VaelabError(f"--out {run_dir} names the run folder, not an image file")
    return config, run_dir, False
