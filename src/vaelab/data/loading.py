"""The source registry and `load_data`: resolve a config to a source, conform it, split it."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from vaelab.data.arrays import load_array_file
from vaelab.data.config import DataConfig
from vaelab.data.images import load_image_folder
from vaelab.data.labelled import keep_labels
from vaelab.data.mnist import load_idx_dataset
from vaelab.data.shapes import load_shapes
from vaelab.data.splits import DataSplits, SourceData, Split, split_source
from vaelab.data.tensors import conform
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

Source = Callable[..., SourceData]  # (config: DataConfig, *, progress: bool) -> SourceData


def load_digits(config: DataConfig, *, progress: bool = True) -> SourceData:
    """scikit-learn's bundled 8x8 digits: 1797 images, values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import, only when used

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(bunch.target).long()
    return SourceData(pool=Split(x=x, y=y), test=None, class_names=tuple(map(str, range(10))))


DATASETS: dict[str, Source] = {
    "digits": load_digits,
    "mnist": functools.partial(load_idx_dataset, "mnist"),
    "fashion-mnist": functools.partial(load_idx_dataset, "fashion-mnist"),
    "shapes": load_shapes,
}

# Sources named by a path, keyed by file suffix; folders are image folders.
FILE_SOURCES: dict[str, Source] = {".npy": load_array_file, ".npz": load_array_file}


def registered_name(dataset: str) -> str | None:
    """The registered name `dataset` stands for, or None when it is (meant as) a path.

    An exact name wins over a path of that name; otherwise an existing path wins over a name
    spelled with another case or "_" for "-" ("MNIST", "Fashion_MNIST").
    """
    if dataset in DATASETS:
        return dataset
    if Path(dataset).expanduser().exists():
        return None
    key = dataset.strip().lower().replace("_", "-")
    return key if key in DATASETS else None


def resolve_source(dataset: str) -> tuple[str, Source]:
    """(name, loader) for a registered name, an image folder, or a file with a known suffix.

    `name` is the registered name (see `registered_name`), or `dataset` itself for a path.
    """
    name = registered_name(dataset)
    if name is not None:
        return name, DATASETS[name]
    path = Path(dataset).expanduser()
    if path.is_dir():
        return dataset, load_image_folder
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in FILE_SOURCES:
            raise VaelabError(
                f"cannot load {dataset}: unsupported file type '{suffix or path.name}'; "
                "use an image folder, .npy or .npz file"
            )
        return dataset, FILE_SOURCES[suffix]
    known = ", ".join(DATASETS)
    if _looks_like_path(dataset):
        raise VaelabError(
            f"dataset path {dataset} does not exist; pass an existing image folder, .npy or .npz "
            f"file, or one of {known}"
        )
    raise VaelabError(
        f"unknown dataset '{dataset}': use one of {known}, "
        "or a path to an image folder, .npy or .npz file"
    )


def _looks_like_path(dataset: str) -> bool:
    """Meant as a path, not a name: a separator, a suffix, or a leading "." or "~"."""
    separators = {"/", os.sep, os.altsep} - {None}
    return (
        any(sep in dataset for sep in separators)
        or dataset.startswith((".", "~"))
        or bool(Path(dataset).suffix)
    )


def load_data(config: DataConfig, *, progress: bool = True) -> DataSplits:
    """Load `config.dataset`, bring it to the requested size / channels, and split it by seed.

    See `split_source` for how the splits are drawn; each keeps the source's order.
    """
    name, load = resolve_source(config.dataset)
    source = load(config, progress=progress)
    if len(source.pool) == 0:
        raise VaelabError(f"dataset {config.dataset} has no samples to train on")
    shape_options = {"image_size": config.image_size, "channels": config.channels}
    source = replace(
        source,
        pool=conform(source.pool, **shape_options),
        test=None if source.test is None else conform(source.test, **shape_options),
    )
    train, val, test = split_source(
        source,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        val_split=config.val_split,
    )
    splits = DataSplits(
        name=name,
        train=train,
        val=val,
        test=test,
        class_names=source.class_names,
        factors=source.factors,
    )
    if config.labelled is not None:  # semi-supervised: hide all but N training labels
        kept = keep_labels(train, config.labelled, classes=splits.classes, seed=config.seed)
        splits = replace(splits, train=kept)
    log.info(
        "data %s %s: %d train, %d val, %d test",
        splits.name,
        splits.shape,
        len(train),
        len(val),
        len(test),
    )
    return splits
