"""Gradient-boosted decision stumps: the classifier behind DCI's importance matrix.

disentanglement_lib uses scikit-learn's GradientBoostingClassifier (depth-3 trees, log loss), whose
scores move between scikit-learn versions. This is a small deterministic stand-in: multi-output
least-squares boosting (Friedman 2001, "Greedy Function Approximation", Algorithm 2, LS_Boost) on
one-hot class targets, with one stump per round, and features pre-binned into quantile bins of
the train part (as histogram gradient boosting does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.binning import apply_edges, quantile_edges


@dataclass(frozen=True, eq=False)
class BoostedStumps:
    """A fitted sum of stumps; the predicted class is the argmax of the summed outputs."""

    classes: np.ndarray  # (K,) the class labels seen in training, sorted
    prior: np.ndarray  # (K,) starting output: the class frequencies of the train part
    feature: np.ndarray  # (R,) the feature each stump splits on
    threshold: np.ndarray  # (R,) a row goes left when x[:, feature] < threshold
    left: np.ndarray  # (R, K) output added on the left, shrinkage included
    right: np.ndarray  # (R, K) output added on the right
    importance: np.ndarray  # (D,) summed squared-error reduction of each feature's stumps

    def decision_function(self, x: ArrayLike) -> np.ndarray:
        """Summed outputs (N, K) for the rows of `x` (N, D)."""
        x = np.asarray(x, dtype=np.float64)
        goes_left = (x[:, self.feature] < self.threshold).astype(np.float64)  # (N, R)
        return self.prior + self.right.sum(axis=0) + goes_left @ (self.left - self.right)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The class label (N,) with the largest summed output."""
        return self.classes[np.argmax(self.decision_function(x), axis=1)]


def fit_stumps(
    x: ArrayLike,
    y: ArrayLike,
    *,
    rounds: int = 100,
    shrinkage: float = 0.1,
    max_bins: int = 64,
) -> BoostedStumps:
    """Boost `rounds` stumps on features `x` (N, D) to predict integer labels `y` (N,).

    Round r fits the residuals R = Y - F of the one-hot targets Y (N, K) by the stump (feature d,
    threshold t) that most reduces the squared error, over all d and all bin edges t:
        gain = |S_L|^2 / n_L + |S_R|^2 / n_R - |S|^2 / n,   S_L = sum of R over the left rows,
    and adds `shrinkage` times the leaf means to F (Friedman 2001, sec. 5). The gain is added to
    the feature's importance. Ties go to the lowest feature, then the lowest threshold; boosting
    stops early once no split reduces the error. Deterministic; no randomness.
    """
    x = np.asarray(x, dtype=np.float64)
    classes, y = np.unique(np.asarray(y), return_inverse=True)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need x (N, D) and y (N,) with N >= 2, got {x.shape} and {y.shape}")
    if rounds < 1 or not 0 < shrinkage <= 1 or max_bins < 2:
        raise ValueError(f"bad settings rounds={rounds}, shrinkage={shrinkage}, bins={max_bins}")
    n, dims = x.shape
    k = len(classes)
    edges = [quantile_edges(x[:, d], max_bins) for d in range(dims)]
    binned = np.stack([apply_edges(x[:, d], edges[d]) for d in range(dims)], axis=1)  # (N, D)
    slot = binned + max_bins * np.arange(dims)  # (N, D) index of (feature, bin) in 0..D*max_bins
    size = dims * max_bins
    count = np.bincount(slot.ravel(), minlength=size)  # (D * bins,) rows per (feature, bin)
    # Per (feature, bin) sums of the one-hot targets and of the current outputs F: the residual
    # sums every split needs are their difference, so no round touches the (N, K) residuals.
    target_sum = np.bincount((slot * k + y[:, None]).ravel(), minlength=size * k)
    target_sum = target_sum.reshape(size, k).astype(np.float64)
    prior = np.bincount(y, minlength=k) / n  # (K,)
    output_sum = np.outer(count, prior)  # (D * bins, K)
    importance = np.zeros(dims)
    stumps: list[tuple[int, float, np.ndarray, np.ndarray]] = []
    for _ in range(rounds):
        split = _best_split(target_sum - output_sum, count, dims, max_bins, n)
        if split is None:
            break
        d, t = split.feature, split.last_left_bin
        goes_left = binned[:, d] <= t
        left_count = np.bincount(slot[goes_left].ravel(), minlength=size)
        left_value, right_value = shrinkage * split.left_mean, shrinkage * split.right_mean
        output_sum += np.outer(left_count, left_value) + np.outer(count - left_count, right_value)
        importance[d] += split.gain
        stumps.append((d, float(edges[d][t]), left_value, right_value))  # x < edges[t]: bin <= t
    return BoostedStumps(
        classes=classes,
        prior=prior,
        feature=np.array([s[0] for s in stumps], dtype=np.int64),
        threshold=np.array([s[1] for s in stumps]),
        left=np.array([s[2] for s in stumps]).reshape(len(stumps), k),
        right=np.array([s[3] for s in stumps]).reshape(len(stumps), k),
        importance=importance,
    )


@dataclass(frozen=True, eq=False)
class _Split:
    feature: int
    last_left_bin: int  # rows in bins 0..last_left_bin go left
    gain: float  # squared-error reduction of the residual fit
    left_mean: np.ndarray  # (K,) mean residual of the left rows
    right_mean: np.ndarray  # (K,)


def _best_split(
    residual_sum: np.ndarray, count: np.ndarray, dims: int, bins: int, n: int
) -> _Split | None:
    """The stump with the largest gain given per-(feature, bin) residual sums (D * bins, K), or
    None when no split reduces the error."""
    residual_sum = residual_sum.reshape(dims, bins, -1)
    left_sum = np.cumsum(residual_sum, axis=1)[:, :-1]  # (D, bins - 1, K) split after bin t
    left_n = np.cumsum(count.reshape(dims, bins), axis=1)[:, :-1]  # (D, bins - 1)
    total = residual_sum[0].sum(axis=0)  # (K,) the same for every feature
    right_sum, right_n = total - left_sum, n - left_n
    valid = (left_n > 0) & (right_n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = (
            np.square(left_sum).sum(axis=-1) / left_n
            + np.square(right_sum).sum(axis=-1) / right_n
            - np.square(total).sum() / n
        )
    gain = np.where(valid, gain, -np.inf)
    d, t = np.unravel_index(np.argmax(gain), gain.shape)
    if not gain[d, t] > 1e-12 * n:  # float noise, not a real reduction
        return None
    return _Split(
        feature=int(d),
        last_left_bin=int(t),
        gain=float(gain[d, t]),
        left_mean=left_sum[d, t] / left_n[d, t],
        right_mean=right_sum[d, t] / right_n[d, t],
    )
