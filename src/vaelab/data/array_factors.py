"""Known factors read from an `.npz` file: a `factors` array beside the images, with optional
`factor_names` and `factor_categorical`, turned into indices and a `Factors` description."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.data.factors import Factors
from vaelab.errors import VaelabError

FACTOR_KEYS = ("factors", "factor_names", "factor_categorical")
MAX_FACTOR_VALUES = 1000  # the metrics count each value: a continuous factor must be binned first


def factors_from_arrays(
    arrays: dict[str, np.ndarray], n: int, path: Path
) -> tuple[torch.Tensor, Factors] | None:
    """(indices (N, F) int64, Factors) from an .npz's factor arrays, or None without `factors`.

    `factors` is (N,) or (N, F) of numbers: each column's distinct values, sorted, become its
    indices 0..K-1 and its `values`. `factor_names` (F,) strings default to factor1..factorF;
    `factor_categorical` (F,) booleans (unordered factors) default to all False.
    """
    if "factors" not in arrays:
        return None
    raw = arrays["factors"]
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[0] != n or raw.dtype.kind not in "iuf":
        raise VaelabError(
            f"{path} has factors of shape {raw.shape} and dtype {raw.dtype}; save one number per "
            f"image and factor, shape ({n}, F)"
        )
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise VaelabError(f"{path} has NaN or infinite factor values")
    count = raw.shape[1]
    names = _names(arrays.get("factor_names"), count, path)
    categorical = _flags(arrays.get("factor_categorical"), count, path)
    columns, values = [], []
    for k in range(count):
        distinct, index = np.unique(raw[:, k], return_inverse=True)
        if len(distinct) > MAX_FACTOR_VALUES:
            raise VaelabError(
                f"{path}: factor {names[k]!r} has {len(distinct)} distinct values; the metrics "
                f"need discrete factors (at most {MAX_FACTOR_VALUES}): bin it first"
            )
        columns.append(index.reshape(-1))
        values.append(tuple(float(v) for v in distinct))
    indices = torch.from_numpy(np.stack(columns, axis=1).astype(np.int64))
    return indices, Factors(names=names, values=tuple(values), categorical=categorical)


def _names(raw: np.ndarray | None, count: int, path: Path) -> tuple[str, ...]:
    if raw is None:
        return tuple(f"factor{k + 1}" for k in range(count))
    if raw.dtype.kind not in "US" or raw.shape != (count,):
        raise VaelabError(
            f"{path} has factor_names of shape {raw.shape} and dtype {raw.dtype}; save {count} "
            "strings"
        )
    return tuple(str(name) for name in raw.tolist())


def _flags(raw: np.ndarray | None, count: int, path: Path) -> tuple[bool, ...]:
    if raw is None:
        return (False,) * count
    if raw.dtype.kind not in "bi" or raw.shape != (count,):
        raise VaelabError(
            f"{path} has factor_categorical of shape {raw.shape} and dtype {raw.dtype}; save "
            f"{count} booleans"
        )
    return tuple(bool(flag) for flag in raw.tolist())
