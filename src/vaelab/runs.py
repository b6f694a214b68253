"""A trained run, opened: its model, configuration, checkpoint, value range, data and split.

Every command that uses a trained model (the figures, eval, plot, report, compare, the
explorer) opens it with `open_run`, so they all find the run folder, read the value range and
choose a split the same way, and fail with the same one-line errors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vaelab.bundles import bundle_home, is_bundle, locate
from vaelab.data import DataSplits, Factors, load_data, registered_name
from vaelab.errors import VaelabError, plural
from vaelab.models import Autoencoder
from vaelab.training.checkpoint import CONFIG_FILE, META_FILE, load_checkpoint, read_config
from vaelab.training.config import RunConfig
from vaelab.training.runs import resolve_device

logger = logging.getLogger(__name__)

SPLIT_ORDER = ("test", "val", "train")  # the split used when none is named: the first non-empty

ValueRange = tuple[float, float]


def check_run(path: Path) -> None:
    """Raise a one-line error when `path` does not exist."""
    if not Path(path).exists():
        raise VaelabError(
            f"{path} does not exist; pass a run folder such as runs/digits-vae, or a bundle"
        )


def run_folder(path: Path) -> Path:
    """The run folder of `path`, which may also name one of its checkpoint folders, or a
    bundle's home (see `bundle_home`): where a command's outputs go by default."""
    path = Path(path)
    if is_bundle(path):
        return bundle_home(path)
    return path.parent if (path / META_FILE).is_file() else path


def read_value_range(meta: dict[str, Any]) -> ValueRange | None:
    """meta.json's "data_range": the training data's (min, max), which figures show as black
    and white. None when absent (checkpoints of older versions) or unusable (a constant
    dataset): callers then fall back to their own scaling."""
    try:
        low, high = (float(value) for value in meta["data_range"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and low < high else None


def load_run_data(
    config: RunConfig, dataset: str | None = None, data_dir: str | None = None
) -> DataSplits:
    """The dataset a run was trained on, from `dataset` / `data_dir` instead of the saved ones
    when given (the data moved); a one-line error when it is gone or changed shape."""
    saved = config.data.dataset
    registered = registered_name(saved) is not None
    if dataset is None and not registered and not Path(saved).expanduser().exists():
        raise VaelabError(
            f"the run's dataset {saved} does not exist any more; if it moved, pass --dataset PATH"
        )
    changes = {"dataset": dataset, "data_dir": None if data_dir is None else str(data_dir)}
    data_config = replace(config.data, **{k: v for k, v in changes.items() if v is not None})
    data = load_data(data_config, progress=False)
    if tuple(data.shape) != tuple(config.model.data_shape):
        raise VaelabError(
            f"dataset {data.name} now has shape {data.shape} but the model was trained on "
            f"{config.model.data_shape}"
        )
    return data


def split_to_use(data: DataSplits, split: str | None = None) -> str:
    """The name of the split to work on: `split` when given (an error if it is empty), else
    the first non-empty one of SPLIT_ORDER, with an info line when that is not the first."""
    if split is not None:
        if len(data.split(split)) == 0:
            sizes = ", ".join(
                f"{name} has {plural(len(data.split(name)), 'image')}"
                for name in SPLIT_ORDER
                if name != split
            )
            raise VaelabError(
                f"the {split} split of {data.name} is empty ({sizes}); choose another --split"
            )
        return split
    empty = []
    for name in SPLIT_ORDER:
        if len(data.split(name)):
            if empty:
                logger.info(
                    "the %s split%s empty; using the %s split (%s)",
                    " and ".join(empty),
                    " is" if len(empty) == 1 else "s are",
                    name,
                    plural(len(data.split(name)), "image"),
                )
            return name
        empty.append(name)
    raise VaelabError(f"dataset {data.name} has no images")  # split_source never allows this


@dataclass(frozen=True)
class TrainedRun:
    """A run's checkpoint, loaded: the model (eval mode), its configuration and meta.json."""

    model: Autoencoder
    config: RunConfig
    meta: dict[str, Any]
    checkpoint: Path  # the checkpoint folder: RUN/best, RUN/last, the one given, or a bundle
    run_dir: Path  # where outputs go by default: the run folder, or a bundle's outputs folder
    value_range: ValueRange | None  # see `read_value_range`
    checkpoint_name: str  # "best" or "last": the checkpoint, or the one packed
    records_dir: Path  # the folder of metrics.jsonl and eval.json, as trained or packed

    def load_data(self, dataset: str | None = None, data_dir: str | None = None) -> DataSplits:
        """The run's dataset; see `load_run_data`."""
        return load_run_data(self.config, dataset, data_dir)

    def choose_split(
        self, split: str | None = None, *, dataset: str | None = None, data_dir: str | None = None
    ) -> RunSplit:
        """The run with one split of its dataset: `split`, or the first non-empty one of
        test, val, train (see `split_to_use`)."""
        return self.split_of(self.load_data(dataset, data_dir), split)

    def split_of(self, data: DataSplits, split: str | None = None) -> RunSplit:
        """As `choose_split`, from the run's dataset already loaded."""
        name = split_to_use(data, split)
        chosen = data.split(name)
        return RunSplit(
            self,
            name,
            chosen.x,
            chosen.y,
            data.name,
            data.class_names,
            factors=chosen.factors,
            factor_info=data.factors,
        )


@dataclass(frozen=True)
class RunSplit:
    """A trained run and the split of its dataset that a command works on."""

    run: TrainedRun
    split: str  # "test", "val" or "train"
    x: torch.Tensor  # (N, C, H, W), on the CPU
    y: torch.Tensor | None  # (N,) class labels
    dataset: str  # the dataset's name
    class_names: tuple[str, ...] | None
    factors: torch.Tensor | None = None  # (N, F) factor indices, for data with known factors
    factor_info: Factors | None = None  # their names, values and kinds

    def __len__(self) -> int:
        return len(self.x)


def scored_checkpoint(path: str | Path) -> str:
    """The checkpoint a run folder is opened at by default: "best" (chosen by validation
    loss) when the run held out a validation split, else "last". Without one, best/ is chosen
    by training loss, which a KL warm-up changes as it goes, so the final weights are the
    honest choice. A checkpoint folder or a bundle names its own."""
    path = Path(path)
    if is_bundle(path) or not (path / CONFIG_FILE).is_file():
        return "best"
    return "best" if read_config(path).data.val_fraction > 0 else "last"


def open_run(
    path: str | Path,
    *,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    with_prior: bool = True,
) -> TrainedRun:
    """Load a run folder's `checkpoint` ("best" or "last"; None: `scored_checkpoint`'s choice),
    the checkpoint folder `path`, or a bundle (a folder or .zip from `vaelab pack`), onto
    `device` ("auto" picks CUDA when available). `with_prior=False` leaves a VQ-VAE with the
    prior of its training."""
    path = Path(path)
    check_run(path)
    found = locate(path, prefer=checkpoint or scored_checkpoint(path))
    model, config, meta = load_checkpoint(
        found.checkpoint, device=resolve_device(str(device)), with_prior=with_prior
    )
    return TrainedRun(
        model,
        config,
        meta,
        found.checkpoint,
        found.home,
        read_value_range(meta),
        found.name,
        found.records,
    )


def load_run(
    path: str | Path,
    *,
    split: str | None = None,
    checkpoint: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> RunSplit:
    """`open_run`, then `TrainedRun.choose_split`: a run with the split to work on."""
    trained = open_run(path, checkpoint=checkpoint, device=device)
    return trained.choose_split(split, dataset=dataset, data_dir=data_dir)
