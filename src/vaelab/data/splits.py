"""Typed containers for loaded data and the seeded train / val / test split."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vaelab.data.factors import Factors
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images `x` (N, C, H, W) float32, optional int64 labels `y` (N,) and, for sources with
    known generative factors, their int64 indices `factors` (N, F) (see `Factors`).

    Samples are in the source's order, not shuffled: a folder with one sub-folder per class
    gives a split sorted by class. Pick spread-out or random examples yourself.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    factors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"Split.x must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        n = self.x.shape[0]
        if self.y is not None and tuple(self.y.shape) != (n,):
            raise ValueError(f"Split.y must be ({n},), got {tuple(self.y.shape)}")
        factors = self.factors
        if factors is not None and (
            factors.ndim != 2 or factors.shape[0] != n or factors.dtype != torch.int64
        ):
            raise ValueError(
                f"Split.factors must be int64 of shape ({n}, F), got {factors.dtype} of "
                f"shape {tuple(factors.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class DataSplits:
    """A loaded dataset: its name, three splits and optional class names.

    `name` is the registered name (e.g. "mnist" for `dataset="MNIST"`) or the path as given.
    `factors` describes the generative factors when the source knows them (`--dataset shapes`);
    then every split carries their indices in `Split.factors`.
    """

    name: str
    train: Split
    val: Split  # empty when val_fraction == 0
    test: Split
    class_names: tuple[str, ...] | None
    factors: Factors | None = None

    def __post_init__(self) -> None:
        _check_factors(self.factors, {n: getattr(self, n) for n in SPLIT_NAMES})

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        _, c, h, w = self.train.x.shape
        return (c, h, w)

    @property
    def classes(self) -> int:
        """K, the number of classes: of the class names, else one more than the largest label
        of any split (0 for data without labels)."""
        if self.class_names:
            return len(self.class_names)
        labels = [s.y for s in (self.train, self.val, self.test) if s.y is not None and len(s.y)]
        return max((int(y.max()) + 1 for y in labels), default=0)

    def split(self, name: str) -> Split:
        """The split called "train", "val" or "test", in the source's order (see `Split`)."""
        if name not in SPLIT_NAMES:
            raise VaelabError(f"unknown split {name!r}: use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


@dataclass(frozen=True)
class SourceData:
    """What a source yields before splitting: a pool to split and, maybe, an official test set."""

    pool: Split
    test: Split | None  # None -> carve test_fraction out of the pool
    class_names: tuple[str, ...] | None
    factors: Factors | None = None  # set -> pool (and test) carry their factor indices

    def __post_init__(self) -> None:
        parts = {"pool": self.pool} if self.test is None else {"pool": self.pool, "test": self.test}
        _check_factors(self.factors, parts)


def _check_factors(factors: Factors | None, parts: dict[str, Split]) -> None:
    """Described factors need indices in every part, one column per factor."""
    if factors is None:
        return
    for name, part in parts.items():
        if part.factors is None or part.factors.shape[1] != len(factors.names):
            got = None if part.factors is None else tuple(part.factors.shape)
            raise ValueError(
                f"the {name} split needs factor indices of shape ({len(part)}, "
                f"{len(factors.names)}) for factors {factors.names}, got {got}"
            )


def _count(fraction: float, n: int) -> int:
    """round(fraction * n), but at least 1 when the fraction is positive and n >= 2."""
    count = round(fraction * n)
    if fraction > 0 and n >= 2:
        count = max(count, 1)
    return count


def split_source(
    source: SourceData,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    val_split: str = "random",
) -> tuple[Split, Split, Split]:
    """(train, val, test) from a seeded permutation of the pool: same seed, same splits.

    Without an official test split, test takes `test_fraction` of the pool first and val
    takes `val_fraction` of the whole pool; otherwise val is `val_fraction` of the pool.
    Counts are rounded, and a positive fraction gets at least one sample. When that would leave
    train empty (pools of 1 or 2 samples, or fractions close to 1), every sample of the pool
    trains and nothing is held out from it (3 samples: one each). Only an empty pool is an
    error. Each split keeps the pool's order (the permutation only chooses the members).
    `val_split` "last" makes val the last images of the pool that test leaves, in order
    instead (MNIST's usual validation set: the last 10,000 of its 60,000 training images).
    """
    n = len(source.pool)
    if n == 0:
        raise VaelabError("the dataset has no samples to split; add some data")
    n_test = _count(test_fraction, n) if source.test is None else 0
    n_val = _count(val_fraction, n)
    if n - n_test - n_val < 1:
        log.info("only %d samples to split: all of them train, none are held out", n)
        n_test = n_val = 0
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # Sorting within each split keeps the source's order, so e.g. a class-sorted pool stays sorted.
    test_idx, val_idx, train_idx = (
        part.sort().values for part in perm.split([n_test, n_val, n - n_test - n_val])
    )
    if val_split == "last":
        rest = torch.cat([val_idx, train_idx]).sort().values
        train_idx, val_idx = rest[: len(rest) - n_val], rest[len(rest) - n_val :]
    train, val = _take(source.pool, train_idx), _take(source.pool, val_idx)
    test = source.test if source.test is not None else _take(source.pool, test_idx)
    return train, val, test


def _take(split: Split, idx: torch.Tensor) -> Split:
    """The samples `idx` of `split`: images, labels and factor indices alike."""
    y = None if split.y is None else split.y[idx]
    factors = None if split.factors is None else split.factors[idx]
    return Split(x=split.x[idx].contiguous(), y=y, factors=factors)
