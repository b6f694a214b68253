"""The data configuration: which source to load and how to split it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vaelab.errors import VaelabError

VAL_SPLITS = ("random", "last")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from, how it is shaped and how it is split.

    `dataset` is a registered name (see `vaelab.data.DATASETS`) or a path to an image folder or a
    `.npy`/`.npz` file. `image_size` is (H, W); an int N or a list (from JSON) is normalised to a
    tuple. `test_fraction` only applies to sources without an official test split.
    """

    dataset: str = "digits"
    data_dir: str | None = None  # IDX files; None -> $VAELAB_DATA, then the cache
    image_size: tuple[int, int] | int | None = None  # (H, W), or N for NxN; stored as (H, W)
    channels: int | None = None  # 1 (grayscale) or 3 (RGB); None keeps what the data has
    val_fraction: float = 0.1  # of the training pool
    # which images validation holds: "random" (a seeded choice) or "last" (the end of the
    # training pool, the usual MNIST protocol: the last 10,000 of 60,000)
    val_split: str = "random"
    test_fraction: float = 0.2  # of everything, when the source has no test split
    seed: int = 0  # same seed -> identical splits
    download: bool = True  # allow fetching mnist / fashion-mnist when absent
    binarize: bool = False  # dynamic binarisation: a fresh Bernoulli(x) draw of each batch
    # semi-supervised: keep the labels of this many training images (balanced over the
    # classes, chosen by `seed`) and hide the rest; None keeps every label
    labelled: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise VaelabError("dataset must be a non-empty name or path")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            object.__setattr__(self, "data_dir", str(self.data_dir))  # accept a Path
        object.__setattr__(self, "image_size", _normalise_size(self.image_size))
        if self.channels is not None and (_not_int(self.channels) or self.channels not in (1, 3)):
            raise VaelabError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not 0 <= value < 1:
                raise VaelabError(f"{name} must be a number in [0, 1), got {value!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise VaelabError(
                f"val_fraction + test_fraction must be below 1 to leave training data, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.val_split not in VAL_SPLITS:
            raise VaelabError(
                f"unknown validation split '{self.val_split}': use one of {', '.join(VAL_SPLITS)}"
            )
        if self.labelled is not None and (_not_int(self.labelled) or self.labelled < 1):
            raise VaelabError(f"labelled must be a positive whole number, got {self.labelled!r}")
        if _not_int(self.seed):
            raise VaelabError(f"seed must be an integer, got {self.seed!r}")


def _not_int(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)


def _normalise_size(size: object) -> tuple[int, int] | None:
    """(H, W) from None, an int N (-> (N, N)), or a 2-sequence of positive ints."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2 or any(_not_int(s) for s in size):
        raise VaelabError(f"image_size must be two positive integers (H, W), got {size!r}")
    height, width = size
    if height < 1 or width < 1:
        raise VaelabError(f"image_size must be two positive integers (H, W), got {size!r}")
    return (height, width)
