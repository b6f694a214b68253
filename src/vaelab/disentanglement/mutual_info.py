"""Plug-in entropy and mutual information of discrete variables, in nats.

The plug-in estimator puts the empirical frequencies into the definitions (Cover & Thomas 2006,
eq. 2.1 and 2.28). It is what disentanglement_lib gets from sklearn.metrics.mutual_info_score.
Sums are exactly rounded (math.fsum) and each log ratio is formed from exact integer counts, so
independent variables on a full grid give exactly 0 and I(X; X) equals H(X) to the last bit.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def entropy(labels: ArrayLike) -> float:
    """H(X) = -sum_x p(x) log p(x) of the empirical distribution of the 1-D `labels`, nats."""
    _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
    return _entropy_from_counts(counts)


def mutual_info(a: ArrayLike, b: ArrayLike) -> float:
    """I(A; B) = sum_ab p(a, b) log(p(a, b) / (p(a) p(b))) of two paired 1-D label arrays, nats."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need two non-empty label arrays of one length, got {len(a)}, {len(b)}")
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    return joint_mutual_info(_joint_counts(a, b, a.max() + 1, b.max() + 1))


def joint_mutual_info(joint: np.ndarray) -> float:
    """Plug-in I(A; B) in nats from a table of joint counts (|A|, |B|)."""
    joint = np.asarray(joint, dtype=np.int64)
    n = joint.sum()
    rows, cols = joint.sum(axis=1), joint.sum(axis=0)
    a, b = np.nonzero(joint)
    count = joint[a, b]
    # p(a,b) / (p(a) p(b)) = n c(a,b) / (c(a) c(b)): integer products, exact below 2**53
    ratio = (count * n) / (rows[a] * cols[b])
    return max(0.0, math.fsum(count / n * np.log(ratio)))


def mutual_info_matrix(
    binned: np.ndarray, labels: np.ndarray, bins: int, sizes: tuple[int, ...]
) -> np.ndarray:
    """I(z_j; v_k) for binned codes (N, D) with values in 0..bins-1 and factor labels (N, F)
    with values in 0..sizes[k]-1: (D, F), nats."""
    info = np.zeros((binned.shape[1], labels.shape[1]))
    for j in range(binned.shape[1]):
        for k, size in enumerate(sizes):
            info[j, k] = joint_mutual_info(_joint_counts(binned[:, j], labels[:, k], bins, size))
    return info


def factor_entropies(labels: np.ndarray) -> np.ndarray:
    """H(v_k) of each column of the factor labels (N, F): (F,), nats."""
    return np.array([_entropy_from_counts(np.bincount(column)) for column in labels.T])


def _entropy_from_counts(counts: np.ndarray) -> float:
    counts = counts[counts > 0]
    n = counts.sum()
    # the same terms as joint_mutual_info on a diagonal table: p log(n / c)
    return math.fsum(counts / n * np.log(n / counts))


def _joint_counts(a: np.ndarray, b: np.ndarray, size_a: int, size_b: int) -> np.ndarray:
    """Contingency table (size_a, size_b) of two label arrays."""
    flat = np.bincount(a * size_b + b, minlength=size_a * size_b)
    return flat.reshape(size_a, size_b)
