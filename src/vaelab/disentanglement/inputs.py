"""Checking the arrays every metric takes, and splitting their rows into train and test parts.

A metric sees `codes` (N, D), the posterior means, and `factors` (N, F), integer factor values,
from a dataset that is a full factor grid or a random subset of one. Results depend only on the
set of rows and the seed, never on the row order: rows are put in a canonical order first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vaelab.errors import VaelabError, plural


@dataclass(frozen=True, eq=False)
class FactorData:
    """Validated inputs of a metric, rows in canonical order."""

    codes: np.ndarray  # (N, D) float64
    labels: np.ndarray  # (N, F) int64, factor k's values renumbered 0..K_k-1 in sorted order
    values: np.ndarray  # (N, F) int64, the factor values as given
    sizes: tuple[int, ...]  # K_k, the number of distinct values of each factor
    names: tuple[str, ...]  # (F,)

    @property
    def n(self) -> int:
        return len(self.codes)


def check_inputs(
    codes: ArrayLike,
    factors: ArrayLike,
    *,
    metric: str,
    names: Sequence[str] | None = None,
    min_samples: int = 2,
    min_dims: int = 1,
    group: np.ndarray | None = None,
) -> FactorData:
    """Validate `codes` (N, D) and `factors` (N, F); raise VaelabError with a one-line message
    naming `metric` when something is wrong. Rows are sorted by `group` (N,) first, if given."""
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise VaelabError(
            f"{metric}: codes and factors must be 2-D arrays (N, D) and (N, F), got shapes "
            f"{codes.shape} and {factors.shape}"
        )
    if len(codes) != len(factors):
        raise VaelabError(
            f"{metric}: codes have {plural(len(codes), 'row')} but factors have "
            f"{len(factors)}; pass one row of each per image"
        )
    if len(codes) < min_samples:
        raise VaelabError(
            f"{metric}: needs at least {min_samples} samples, got {len(codes)}; encode more images"
        )
    if codes.shape[1] < min_dims or factors.shape[1] < 1:
        raise VaelabError(
            f"{metric}: needs at least {plural(min_dims, 'code dimension')} and 1 factor, got "
            f"{codes.shape[1]} and {factors.shape[1]}"
        )
    if not np.issubdtype(codes.dtype, np.number) or np.issubdtype(codes.dtype, np.complexfloating):
        raise VaelabError(f"{metric}: codes must be real numbers, got dtype {codes.dtype}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise VaelabError(
            f"{metric}: factors must be integer value indices, got dtype {factors.dtype}; "
            f"convert with .astype(np.int64)"
        )
    codes = codes.astype(np.float64)
    bad = ~np.isfinite(codes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise VaelabError(
            f"{metric}: codes contain {plural(int(bad.sum()), 'NaN or infinite value')} "
            f"(first at row {row}, dimension {col}); check the encoder's output"
        )
    names = _factor_names(names, factors.shape[1], metric)
    values = factors.astype(np.int64)
    order = canonical_order(codes, values, group)
    codes, values = codes[order], values[order]
    labels = np.empty_like(values)
    sizes = []
    for k in range(values.shape[1]):
        uniques, labels[:, k] = np.unique(values[:, k], return_inverse=True)
        if len(uniques) < 2:
            raise VaelabError(
                f"{metric}: factor '{names[k]}' takes a single value ({uniques[0]}) in these "
                f"samples; drop it or sample it too"
            )
        sizes.append(len(uniques))
    return FactorData(codes, labels, values, tuple(sizes), names)


def check_categorical(categorical: Sequence[bool], data: FactorData, *, metric: str) -> np.ndarray:
    """The per-factor flags 'unordered (True) or ordinal (False)' as a (F,) bool array."""
    flags = np.asarray(categorical)
    if flags.shape != (len(data.names),) or flags.dtype != np.bool_:
        raise VaelabError(
            f"{metric}: categorical must hold one bool per factor ({len(data.names)}), got "
            f"{list(np.atleast_1d(flags))}"
        )
    return flags


def canonical_order(
    codes: np.ndarray, values: np.ndarray, group: np.ndarray | None = None
) -> np.ndarray:
    """A permutation putting rows in lexicographic order of (group, factors, codes): equal rows
    are interchangeable, so anything computed from the sorted rows ignores the input order."""
    columns = [values.astype(np.float64), codes]
    if group is not None:
        columns.insert(0, np.asarray(group, dtype=np.float64)[:, None])
    keys = np.concatenate(columns, axis=1)  # (N, [1 +] F + D)
    return np.lexsort(keys.T[::-1])  # np.lexsort sorts by its last key first


def train_test_data(
    codes: ArrayLike,
    factors: ArrayLike,
    test: tuple[ArrayLike, ArrayLike] | None,
    *,
    metric: str,
    names: Sequence[str] | None,
    train_fraction: float,
    seed: int,
) -> tuple[FactorData, np.ndarray, np.ndarray]:
    """Checked rows and the indices (train, test) of the train and test parts: `test` =
    (test_codes, test_factors) when the caller has a held-out set, otherwise a seeded random
    split of one set into `train_fraction` and the rest."""
    if test is None:
        data = check_inputs(codes, factors, metric=metric, names=names, min_samples=3, min_dims=2)
        train, held_out = split_rows(data.n, train_fraction=train_fraction, seed=seed)
        return data, train, held_out
    codes, factors = np.asarray(codes), np.asarray(factors)
    test_codes, test_factors = np.asarray(test[0]), np.asarray(test[1])
    if codes.ndim != 2 or test_codes.ndim != 2 or codes.shape[1] != test_codes.shape[1]:
        raise VaelabError(
            f"{metric}: train and test codes must be (N, D) with the same D, got "
            f"{codes.shape} and {test_codes.shape}"
        )
    if factors.ndim != 2 or test_factors.ndim != 2 or factors.shape[1] != test_factors.shape[1]:
        raise VaelabError(
            f"{metric}: train and test factors must be (N, F) with the same F, got "
            f"{factors.shape} and {test_factors.shape}"
        )
    if len(codes) != len(factors) or len(test_codes) != len(test_factors):
        raise VaelabError(
            f"{metric}: codes and factors must have one row each per image, got "
            f"{len(codes)} and {len(factors)} train rows, {len(test_codes)} and "
            f"{len(test_factors)} test rows"
        )
    if len(codes) < 2 or len(test_codes) < 1:
        raise VaelabError(
            f"{metric}: needs at least 2 train and 1 test samples, got {len(codes)} and "
            f"{len(test_codes)}"
        )
    group = np.repeat([0, 1], [len(codes), len(test_codes)])
    data = check_inputs(
        np.concatenate([codes, test_codes]),
        np.concatenate([factors, test_factors]),
        metric=metric,
        names=names,
        min_dims=2,
        group=group,
    )
    n_train = len(codes)  # the group key keeps train rows first
    return data, np.arange(n_train), np.arange(n_train, data.n)


def split_rows(n: int, *, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of a seeded random split of `n` rows in canonical order."""
    if not 0 < train_fraction < 1:
        raise VaelabError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    n_train = int(round(train_fraction * n))
    if n_train < 2 or n - n_train < 1:
        raise VaelabError(
            f"a {train_fraction:.0%} train split of {plural(n, 'sample')} leaves {n_train} to "
            f"train on and {n - n_train} to test; pass more samples"
        )
    rows = np.random.default_rng(seed).permutation(n)
    return rows[:n_train], rows[n_train:]


def _factor_names(names: Sequence[str] | None, count: int, metric: str) -> tuple[str, ...]:
    if names is None:
        return tuple(f"factor {k}" for k in range(count))
    names = tuple(str(name) for name in names)
    if len(names) != count:
        raise VaelabError(
            f"{metric}: got {plural(len(names), 'factor name')} for {plural(count, 'factor')}"
        )
    return names
