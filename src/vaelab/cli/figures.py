"""`vaelab sample`, `reconstruct` and `interpolate`: PNG figures of a trained run (of a
conditional one too: see `run_images`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vaelab.analysis.conditional_figures import check_label_model, completes_images
from vaelab.analysis.samplers import SAMPLERS, fit_sampler
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    output_path,
)
from vaelab.cli.run_images import (
    DEFAULT_RECONSTRUCTIONS,
    DEFAULT_SAMPLES,
    INTERPOLATION_PNG,
    RECONSTRUCTIONS_PNG,
    SAMPLE_COLUMNS,
    SAMPLES_PNG,
    default_end,
    interpolation_frames,
    save_grid,
    save_reconstructions,
    save_samples,
)
from vaelab.data import load_image_file
from vaelab.errors import VaelabError, plural
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit, TrainedRun, check_run, open_run, run_folder

MAX_FIGURE_IMAGES = 1024  # --n, --steps: more makes a PNG too large to view (or to open)


def figure_output(run: Path, out: str | None, default_name: str) -> Path:
    """The PNG to write: --out (a file, or a folder for the default name), else in the run."""
    return output_path(run_folder(run) / default_name, out, suffixes=(".png",), what="a .png file")


def check_count(value: int, flag: str, minimum: int = 1) -> None:
    if value < minimum:
        raise VaelabError(f"{flag} must be at least {minimum}, got {value}")
    if value > MAX_FIGURE_IMAGES:
        raise VaelabError(
            f"{flag} must be at most {MAX_FIGURE_IMAGES}, got {value}: a bigger figure makes a "
            "PNG too large to view"
        )


# --- the commands -----------------------------------------------------------------------------


def _check_label(model: Autoencoder, label: int) -> None:
    """A one-line error unless `label` is a class of a run conditional on labels."""
    check_label_model(model, "--label")
    if not 0 <= label < model.classes:
        raise VaelabError(
            f"--label {label} is out of range: this run has classes 0 to {model.classes - 1}"
        )


def _label_samples(trained: TrainedRun, label: int, n: int, seed: int, path: Path) -> Path:
    """n images of class `label`, as `sample` lays out prior samples."""
    model = trained.model
    generator = torch.Generator(device=model.device).manual_seed(seed)
    y = torch.full((n,), label, dtype=torch.long, device=model.device)
    with torch.inference_mode():
        images = model.sample(n, y=y, generator=generator)
    return save_grid(images, path, trained.value_range)


def sample(
    run: Path,
    *,
    n: int | None = None,
    seed: int = 0,
    out: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
    sampler: str = "prior",
    dataset: str | None = None,
    data_dir: str | None = None,
    label: int | None = None,
) -> Path:
    """A grid of n (default 64) images decoded from codes drawn from the prior N(0, I), or
    (sampler="gmm") from a Gaussian mixture fitted to the run's training codes.

    A run conditional on labels draws n images of class `label`, or without one a row per
    class of n / K each (default 8); a cvae trained with --observe completes test images.
    """
    check_run(run)
    path = figure_output(run, out, SAMPLES_PNG)
    if n is not None:
        check_count(n, "--n")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    model = trained.model
    if label is not None:
        _check_label(model, label)
    if model.conditional and sampler != "prior":
        raise VaelabError(
            f"--sampler {sampler} is for unconditional runs: a {model.config.model}'s codes "
            "depend on its condition, so it samples from its prior"
        )
    if label is not None:
        return _label_samples(trained, label, DEFAULT_SAMPLES if n is None else n, seed, path)
    if sampler == "prior":
        chosen = None
        if completes_images(model):
            chosen = trained.choose_split(dataset=dataset, data_dir=data_dir)
        return save_samples(trained, path, n=n, seed=seed, chosen=chosen)
    n = DEFAULT_SAMPLES if n is None else n
    train_x = trained.load_data(dataset, data_dir).train.x
    fitted = fit_sampler(sampler, model, train_x, seed=seed)
    z = fitted.sample(n, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        images = model.sample(n, z=z.to(model.device, model.dtype))
    return save_grid(images, path, trained.value_range)


def reconstruct(
    run: Path,
    *,
    n: int | None = None,
    split: str | None = None,
    out: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
) -> Path:
    """n images spread evenly over a split (default: 10, at most the split) above their
    reconstructions. The split defaults to test, else val, else train (see `split_to_use`)."""
    check_run(run)
    path = figure_output(run, out, RECONSTRUCTIONS_PNG)
    if n is not None:
        check_count(n, "--n")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
    if n is None:
        n = min(DEFAULT_RECONSTRUCTIONS, len(chosen))
    elif n > len(chosen):
        raise VaelabError(
            f"--n {n} is more than the {chosen.split} split holds "
            f"({plural(len(chosen), 'image')}); pass --n {len(chosen)} or less"
        )
    return save_reconstructions(trained, chosen.x, n, path, y=chosen.y)


def is_index(value: str | None) -> bool:
    return value is None or value.removeprefix("-").isascii() and value.lstrip("-").isdigit()


def check_image_arg(flag: str, value: str | None) -> None:
    """Refuse, before any work, an end that is neither an index nor possibly an image file."""
    if is_index(value):
        return
    path = Path(value)
    if not path.exists():
        raise VaelabError(
            f"{flag} {value}: {path} does not exist; pass an index into the split or an image "
            "file (PNG, JPEG, ...)"
        )
    if path.is_file() and path.suffix.lower() not in Image.registered_extensions():
        raise VaelabError(
            f"{flag} {value} is not an image file or a dataset index; pass an index into the "
            "split or an image file (PNG, JPEG, ...)"
        )


def split_index(value: str | int | None, chosen: RunSplit) -> int:
    """The image at `value` (0 when None; negative counts from the end) of the split, checked."""
    index = 0 if value is None else int(value)
    if not -len(chosen) <= index < len(chosen):
        raise VaelabError(
            f"index {index} is out of range: the {chosen.split} split has "
            f"{plural(len(chosen), 'image')} (0 to {len(chosen) - 1})"
        )
    return index % len(chosen)


def interpolate(
    run: Path,
    *,
    start: str | None = None,
    end: str | None = None,
    steps: int = 10,
    spherical: bool = False,
    split: str | None = None,
    out: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
) -> Path:
    """A strip from `start` to `end`: both originals and `steps` decodings along the path.

    Each end is an index into the split or a path to an image file (resized to the model's);
    the split defaults as in `reconstruct`.
    """
    check_run(run)
    path = figure_output(run, out, INTERPOLATION_PNG)
    check_count(steps, "--steps", minimum=2)
    check_image_arg("--from", start)
    check_image_arg("--to", end)
    trained = open_run(run, checkpoint=checkpoint, device=device)
    shape = tuple(trained.config.model.data_shape)
    chosen = None
    if is_index(start) or is_index(end):
        chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
    label = None  # the label the path is decoded with, for a run conditional on labels
    if is_index(start):
        start_index = split_index(start, chosen)
        x_a = chosen.x[start_index]
        if chosen.y is not None and chosen.y[start_index] >= 0:
            label = int(chosen.y[start_index])
    else:
        start_index, x_a = 0, load_image_file(start, shape)
    if end is None:
        x_b = chosen.x[default_end(chosen, start_index)]
    elif is_index(end):
        x_b = chosen.x[split_index(end, chosen)]
    else:
        x_b = load_image_file(end, shape)
    frames = interpolation_frames(trained.model, x_a, x_b, steps, spherical, label=label)
    return save_grid(frames, path, trained.value_range)


# --- the command line -------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser, default_png: str) -> None:
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "--out",
        metavar="PNG",
        help=f"where to write the PNG, or a folder for it (default RUN/{default_png})",
    )
    add_shared_arguments(parser, checkpoint=True, device=f"{MODEL_DEVICE} (default: auto)")
    add_quiet(parser)


def _add_sample_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="PNG grid of images decoded from the prior",
        description="A grid of images decoded from random codes: drawn from the prior N(0, I), "
        "or with --sampler gmm from a Gaussian mixture fitted to the run's training codes. "
        "A run conditional on class labels (cvae, m2) draws a row per class, or with --label "
        "only that class; a cvae trained with --observe shows test images' observed parts, "
        "each followed by completions of the rest.",
    )
    _add_model_arguments(parser, SAMPLES_PNG)
    parser.add_argument(
        "--n",
        type=int,
        help=f"number of samples, at most {MAX_FIGURE_IMAGES}. Without --label, a run "
        "conditional on labels draws n / K per class (K classes), rounded to the nearest "
        f"whole number, at least 1; a cvae trained with --observe shows n / {SAMPLE_COLUMNS} "
        f"test images (rounded likewise), each with {SAMPLE_COLUMNS - 1} completions "
        f"(default: {DEFAULT_SAMPLES}; {SAMPLE_COLUMNS} per class, or {SAMPLE_COLUMNS} test "
        "images)",
    )
    parser.add_argument(
        "--label",
        type=int,
        metavar="CLASS",
        help="for a run conditional on class labels (cvae, m2): draw all n samples of this "
        "class, 0 to K-1 (default: a row per class)",
    )
    add_shared_arguments(parser, seed="seed of the codes (default: 0)")
    parser.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        default="prior",
        help="prior: z ~ N(0, I); gmm: a Gaussian mixture fitted to the run's "
        "training codes, an autoencoder's fairest chance (default: prior)",
    )
    add_shared_arguments(
        parser,
        dataset="with --sampler gmm, or for a cvae trained with --observe: the run's data, if "
        "it moved (default: the path in the run's config.json)",
        data_dir="with --sampler gmm, or for a cvae trained with --observe: folder with the "
        "MNIST IDX files (default: the run's, then $VAELAB_DATA, then the download cache, "
        "then Debian's /usr/share/datasets)",
    )


def _add_reconstruct_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="images above their reconstructions",
        description="Images spread evenly over a split of the run's dataset, each above its "
        "reconstruction, in row pairs of up to 10.",
    )
    _add_model_arguments(parser, RECONSTRUCTIONS_PNG)
    parser.add_argument(
        "--n",
        type=int,
        help=f"number of images, at most {MAX_FIGURE_IMAGES} and the split's size "
        "(default: 10, or the whole split when smaller)",
    )
    add_shared_arguments(parser, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)


def _add_interpolate_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "interpolate",
        help="PNG strip along the latent path between two images",
        description="A strip from one image to another: both originals and the decodings of "
        "--steps codes on the line (or, with --spherical, the great circle) between their "
        "codes. Each end is an index into the split (--from 3 is the split's fourth image) or "
        "an image file.",
    )
    _add_model_arguments(parser, INTERPOLATION_PNG)
    parser.add_argument(
        "--from",
        dest="start",
        metavar="INDEX|IMAGE",
        help="an index into --split (0 is its first image, -1 its last) or an image file "
        "(default: 0)",
    )
    parser.add_argument(
        "--to",
        dest="end",
        metavar="INDEX|IMAGE",
        help="an index or an image file (default: the next image of another class)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help=f"decoded points between the two ends, at most {MAX_FIGURE_IMAGES} (default: 10)",
    )
    parser.add_argument(
        "--spherical",
        action="store_true",
        help="slerp between the codes instead of a straight line",
    )
    add_shared_arguments(parser, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)


def add_parsers(subparsers: Any) -> None:
    """The `sample`, `reconstruct` and `interpolate` subcommands."""
    _add_sample_parser(subparsers)
    _add_reconstruct_parser(subparsers)
    _add_interpolate_parser(subparsers)


def _sample(args: argparse.Namespace) -> list[Path]:
    path = sample(
        Path(args.run),
        n=args.n,
        seed=args.seed,
        out=args.out,
        checkpoint=args.checkpoint,
        device=args.device,
        sampler=args.sampler,
        dataset=args.dataset,
        data_dir=args.data_dir,
        label=args.label,
    )
    return [path]


def _reconstruct(args: argparse.Namespace) -> list[Path]:
    path = reconstruct(
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


def _interpolate(args: argparse.Namespace) -> list[Path]:
    path = interpolate(
        Path(args.run),
        start=args.start,
        end=args.end,
        steps=args.steps,
        spherical=args.spherical,
        split=args.split,
        out=args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    return [path]


COMMANDS = {"sample": _sample, "reconstruct": _reconstruct, "interpolate": _interpolate}
