"""Turning continuous codes into bins: equal-width (MIG) and equal-frequency (SAP, boosting)."""

from __future__ import annotations

import numpy as np


def equal_width_bins(codes: np.ndarray, bins: int) -> np.ndarray:
    """Codes (N, D) -> bin indices (N, D) in 0..bins-1, `bins` equal-width bins spanning each
    dimension's own [min, max]; a constant dimension goes to bin 0.

    Equal to disentanglement_lib's `_histogram_discretize` (np.digitize on np.histogram's edges)
    except at float rounding on bin edges: here bin = floor((z - min) / (max - min) * bins),
    clipped to bins - 1, in float64. K <= bins evenly spaced values land at i * bins / (K - 1)
    for i = 0..K-1, more than 1 apart, so rounding cannot merge two of them into one bin.
    """
    codes = np.asarray(codes, dtype=np.float64)
    low, high = codes.min(axis=0), codes.max(axis=0)  # (D,)
    span = high - low
    span = np.where(span > 0, span, 1.0)  # constant dimension: every (z - min) is 0 -> bin 0
    position = (codes - low) / span * bins  # (N, D) in [0, bins]
    return np.minimum(np.floor(position).astype(np.int64), bins - 1)


def quantile_edges(x: np.ndarray, max_bins: int) -> np.ndarray:
    """Thresholds splitting the 1-D sample `x` into at most `max_bins` bins of about equal count.

    With at most `max_bins` distinct values each value gets its own bin (edges at the midpoints
    between them); otherwise the edges are the distinct interior quantiles at levels
    1/max_bins, ..., (max_bins - 1)/max_bins. Apply them with `apply_edges`.
    """
    distinct = np.unique(x)
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) / 2
    levels = np.arange(1, max_bins) / max_bins
    return np.unique(np.quantile(x, levels))


def apply_edges(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value of `x`: the number of edges <= x, in 0..len(edges)."""
    return np.searchsorted(edges, x, side="right")
