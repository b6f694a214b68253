"""`vaelab sample`, `reconstruct` and `interpolate`: PNG figures of a trained run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vaelab.analysis.samplers import fit_sampler
from vaelab.data import DataSplits, Split, load_image_file
from vaelab.errors import VaelabError, plural
from vaelab.figures import save_image_grid, save_image_pairs
from vaelab.models import VAE, Autoencoder
from vaelab.training.checkpoint import META_FILE, load_checkpoint
from vaelab.training.config import RunConfig
from vaelab.training.runs import load_run_data, resolve_device

logger = logging.getLogger(__name__)

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
INTERPOLATION_PNG = "interpolation.png"
MAX_FIGURE_IMAGES = 1024  # --n, --steps: more makes a PNG too large to view (or to open)
DEFAULT_RECONSTRUCTIONS = 10
RECONSTRUCTION_COLUMNS = 10  # pairs per row pair before wrapping
SPLIT_ORDER = ("test", "val", "train")  # what the figures show by default: the first non-empty


@dataclass(frozen=True)
class Trained:
    """A checkpoint's model (eval mode), config, and the value range its figures display."""

    model: Autoencoder
    config: RunConfig
    value_range: tuple[float, float] | None  # the training data's [min, max]; None if unknown


def check_run(run: Path) -> None:
    if not run.exists():
        raise VaelabError(f"{run} does not exist; pass a run folder such as runs/digits-vae")


def run_folder(run: Path) -> Path:
    """The run folder of `run`, which may also name one of its checkpoint folders."""
    return run.parent if (run / META_FILE).is_file() else run


def _output(run: Path, out: str | None, default_name: str) -> Path:
    """The PNG to write: --out (a file, or a folder for the default name), else in the run."""
    if out is None:
        return run_folder(run) / default_name
    path = Path(out)
    if path.is_dir():
        path = path / default_name
    if path.suffix.lower() != ".png":
        raise VaelabError(f"--out {path} must be a .png file (or an existing folder)")
    if not path.parent.is_dir():
        raise VaelabError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _check_count(value: int, flag: str, minimum: int = 1) -> None:
    if value < minimum:
        raise VaelabError(f"{flag} must be at least {minimum}, got {value}")
    if value > MAX_FIGURE_IMAGES:
        raise VaelabError(f"{flag} must be at most {MAX_FIGURE_IMAGES}, got {value}: a bigger "
                          "figure makes a PNG too large to view")  # fmt: skip


def _value_range(meta: dict[str, Any]) -> tuple[float, float] | None:
    """meta.json's "data_range": the training data's [min, max]. None when absent (older
    checkpoints) or unusable (a constant dataset), and figures fall back to `to_display`'s own
    scaling."""
    try:
        low, high = (float(value) for value in meta["data_range"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and low < high else None


def load_trained(run: Path, checkpoint: str, device: str) -> Trained:
    """A run's (or checkpoint folder's) model in eval mode, with its config and value range."""
    check_run(run)
    model, config, meta = load_checkpoint(run, device=resolve_device(device), prefer=checkpoint)
    return Trained(model, config, _value_range(meta))


def choose_split(data: DataSplits, split: str | None) -> tuple[str, Split]:
    """(name, split): `split` when given (an error if it is empty), else the first non-empty
    one of test, val, train, with an info line when that is not test."""
    if split is not None:
        chosen = data.split(split)
        if len(chosen) == 0:
            sizes = ", ".join(f"{name} has {plural(len(data.split(name)), 'image')}"
                              for name in SPLIT_ORDER if name != split)  # fmt: skip
            raise VaelabError(f"the {split} split of {data.name} is empty ({sizes}); choose "
                              "another --split")  # fmt: skip
        return split, chosen
    empty = []
    for name in SPLIT_ORDER:
        if len(data.split(name)):
            if empty:
                logger.info("the %s split%s empty; using the %s split (%s)", " and ".join(empty),
                            " is" if len(empty) == 1 else "s are", name,
                            plural(len(data.split(name)), "image"))  # fmt: skip
            return name, data.split(name)
        empty.append(name)
    raise VaelabError(f"dataset {data.name} has no images")  # split_source never allows this


def _spread(n: int, total: int) -> torch.Tensor:
    """n indices spread evenly over 0..total-1, first and last included (n <= total)."""
    return torch.linspace(0, total - 1, n).round().long().unique()


def _save(images: torch.Tensor, path: Path, value_range: tuple[float, float] | None) -> Path:
    """One row, or a square grid for more than 16 images."""
    columns = len(images) if len(images) <= 16 else max(1, round(math.sqrt(len(images))))
    return save_image_grid(images, path, columns=columns, value_range=value_range)


def _save_reconstructions(trained: Trained, chosen: Split, n: int, path: Path) -> Path:
    """n images spread over the split, above their reconstructions, 10 pairs a row."""
    x = chosen.x[_spread(n, len(chosen))]
    x_hat = _reconstructions(trained.model, x)
    columns, value_range = RECONSTRUCTION_COLUMNS, trained.value_range
    return save_image_pairs(x, x_hat, path, columns=columns, value_range=value_range)


@torch.inference_mode()
def _samples(model: Autoencoder, n: int, seed: int) -> torch.Tensor:
    if not isinstance(model, VAE):
        logger.info("note: the %s model has no prior; its samples decode z ~ N(0, I) and may "
                    "not look like the data", model.config.model)  # fmt: skip
    generator = torch.Generator(device=model.device).manual_seed(seed)
    return model.sample(n, generator=generator)


@torch.inference_mode()
def _reconstructions(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    return model.reconstruct(x.to(model.device)).cpu()


@torch.inference_mode()
def _interpolation(
    model: Autoencoder, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, spherical: bool = False
) -> torch.Tensor:
    """(steps + 2, C, H, W): the two originals at the ends, the decoded path between them."""
    x_a, x_b = x_a.to(model.device), x_b.to(model.device)
    frames = model.interpolate(x_a, x_b, steps, spherical=spherical)
    return torch.cat([x_a[None], frames, x_b[None]])


def sample(
    run: Path, *, n: int = 64, seed: int = 0, out: str | None = None,
    checkpoint: str = "best", device: str = "auto", sampler: str = "prior",
    dataset: str | None = None, data_dir: str | None = None,
) -> Path:  # fmt: skip
    """A grid of n images decoded from codes drawn from the prior N(0, I), or (sampler="gmm")
    from a Gaussian mixture fitted to the run's training codes."""
    check_run(run)
    path = _output(run, out, SAMPLES_PNG)
    _check_count(n, "--n")
    trained = load_trained(run, checkpoint, device)
    if sampler == "prior":
        return _save(_samples(trained.model, n, seed), path, trained.value_range)
    train_x = load_run_data(trained.config, dataset, data_dir).train.x
    fitted = fit_sampler(sampler, trained.model, train_x, seed=seed)
    z = fitted.sample(n, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        images = trained.model.sample(n, z=z.to(trained.model.device, trained.model.dtype))
    return _save(images, path, trained.value_range)


def reconstruct(
    run: Path, *, n: int | None = None, split: str | None = None, out: str | None = None,
    dataset: str | None = None, data_dir: str | None = None, checkpoint: str = "best",
    device: str = "auto",
) -> Path:  # fmt: skip
    """n images spread evenly over a split (default: 10, at most the split) above their
    reconstructions. The split defaults to test, else val, else train (see `choose_split`)."""
    check_run(run)
    path = _output(run, out, RECONSTRUCTIONS_PNG)
    if n is not None:
        _check_count(n, "--n")
    trained = load_trained(run, checkpoint, device)
    name, chosen = choose_split(load_run_data(trained.config, dataset, data_dir), split)
    if n is None:
        n = min(DEFAULT_RECONSTRUCTIONS, len(chosen))
    elif n > len(chosen):
        raise VaelabError(
            f"--n {n} is more than the {name} split holds ({plural(len(chosen), 'image')}); "
            f"pass --n {len(chosen)} or less"
        )
    return _save_reconstructions(trained, chosen, n, path)


def _is_index(value: str | None) -> bool:
    return value is None or value.removeprefix("-").isascii() and value.lstrip("-").isdigit()


def _check_image_end(flag: str, value: str | None) -> None:
    """Refuse, before any work, an end that is neither an index nor possibly an image file."""
    if _is_index(value):
        return
    path = Path(value)
    if not path.exists():
        raise VaelabError(f"{flag} {value}: {path} does not exist; pass an index into the split "
                          "or an image file (PNG, JPEG, ...)")  # fmt: skip
    if path.is_file() and path.suffix.lower() not in Image.registered_extensions():
        raise VaelabError(f"{flag} {value} is not an image file or a dataset index; pass an "
                          "index into the split or an image file (PNG, JPEG, ...)")  # fmt: skip


def _index(value: str | None, name: str, chosen: Split) -> int:
    index = 0 if value is None else int(value)
    if not -len(chosen) <= index < len(chosen):
        raise VaelabError(
            f"index {index} is out of range: the {name} split has "
            f"{plural(len(chosen), 'image')} (0 to {len(chosen) - 1})"
        )
    return index % len(chosen)


def _default_end(chosen: Split, start: int) -> int:
    """The next image after `start` of another class (or simply the next image)."""
    if chosen.y is not None:
        others = torch.nonzero(chosen.y != chosen.y[start]).flatten()
        if len(others):
            later = others[others > start]
            return int(later[0] if len(later) else others[0])
    return (start + 1) % len(chosen)


def interpolate(
    run: Path, *, start: str | None = None, end: str | None = None, steps: int = 10,
    spherical: bool = False, split: str | None = None, out: str | None = None,
    dataset: str | None = None, data_dir: str | None = None, checkpoint: str = "best",
    device: str = "auto",
) -> Path:  # fmt: skip
    """A strip from `start` to `end`: both originals and `steps` decodings along the path.

    Each end is an index into the split or a path to an image file (resized to the model's);
    the split defaults as in `reconstruct`.
    """
    check_run(run)
    path = _output(run, out, INTERPOLATION_PNG)
    _check_count(steps, "--steps", minimum=2)
    _check_image_end("--from", start)
    _check_image_end("--to", end)
    trained = load_trained(run, checkpoint, device)
    shape = tuple(trained.config.model.data_shape)
    name, chosen = "", None
    if _is_index(start) or _is_index(end):
        name, chosen = choose_split(load_run_data(trained.config, dataset, data_dir), split)
    if _is_index(start):
        start_index = _index(start, name, chosen)
        x_a = chosen.x[start_index]
    else:
        start_index, x_a = 0, load_image_file(start, shape)
    if end is None:
        x_b = chosen.x[_default_end(chosen, start_index)]
    elif _is_index(end):
        x_b = chosen.x[_index(end, name, chosen)]
    else:
        x_b = load_image_file(end, shape)
    frames = _interpolation(trained.model, x_a, x_b, steps, spherical)
    return _save(frames, path, trained.value_range)
