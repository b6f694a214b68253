"""Disentanglement, completeness and informativeness, DCI (Eastwood & Williams 2018, "A
Framework for the Quantitative Evaluation of Disentangled Representations"), as
disentanglement_lib computes them but with vaelab's own boosted stumps as the predictor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.boosting import fit_stumps
from vaelab.disentanglement.inputs import train_test_data
from vaelab.errors import VaelabError

DEFINITION = (
    "DCI (Eastwood & Williams 2018): per factor, boosted decision stumps predict the factor from "
    "all codes; their feature importances, normalised per factor, form R (D, F). "
    "Disentanglement = sum_j rho_j (1 - H_F(R_j. / sum_k R_jk)) with rho_j = sum_k R_jk / sum R; "
    "completeness = mean_k (1 - H_D(R_.k)); informativeness = held-out accuracy averaged over "
    "factors (disentanglement_lib's convention; the paper reports the error)."
)


@dataclass(frozen=True, eq=False)
class DCIResult:
    """DCI scores, the importance matrix and the predictors' accuracies."""

    score: float  # the disentanglement, DCI's headline number
    disentanglement: float
    completeness: float
    informativeness: float  # test accuracy averaged over factors
    importance: np.ndarray  # (D, F) R, each column sums to 1 (or is 0)
    code_disentanglement: np.ndarray  # (D,) 1 - H_F(P_j.)
    code_weight: np.ndarray  # (D,) rho_j
    factor_completeness: np.ndarray  # (F,) 1 - H_D(P_.k)
    train_accuracy: np.ndarray  # (F,)
    test_accuracy: np.ndarray  # (F,)
    definition: str = DEFINITION
    settings: dict[str, object] = field(default_factory=dict)


def dci(
    codes: ArrayLike,
    factors: ArrayLike,
    *,
    test: tuple[ArrayLike, ArrayLike] | None = None,
    names: Sequence[str] | None = None,
    train_fraction: float = 0.8,
    seed: int = 0,
    rounds: int = 100,
    shrinkage: float = 0.1,
    max_bins: int = 64,
) -> DCIResult:
    """DCI of `codes` (N, D) against integer `factors` (N, F).

    Predictors train on `codes`/`factors` and are scored on `test` = (test_codes, test_factors)
    when given; otherwise one set is split by `seed` into `train_fraction` and the rest. The
    importance R_jk is the squared-error reduction of code j's stumps in the model of factor k,
    normalised so each column sums to 1 (as scikit-learn's feature_importances_, which
    disentanglement_lib uses). Rows or columns of R that are all zero count as uniform (score 0).
    """
    data, train, held_out = train_test_data(
        codes, factors, test, metric="DCI", names=names, train_fraction=train_fraction, seed=seed
    )
    n_factors = len(data.sizes)
    if n_factors < 2:
        raise VaelabError("DCI: needs at least 2 factors (disentanglement is an entropy over them)")
    importance = np.zeros((data.codes.shape[1], n_factors))
    train_accuracy, test_accuracy = np.zeros(n_factors), np.zeros(n_factors)
    for k in range(n_factors):
        y = data.labels[:, k]
        model = fit_stumps(
            data.codes[train], y[train], rounds=rounds, shrinkage=shrinkage, max_bins=max_bins
        )
        total = model.importance.sum()
        importance[:, k] = model.importance / total if total > 0 else 0.0
        train_accuracy[k] = np.mean(model.predict(data.codes[train]) == y[train])
        test_accuracy[k] = np.mean(model.predict(data.codes[held_out]) == y[held_out])
    code_score = 1 - _normalised_entropy(importance)  # (D,)
    code_weight = _weights(importance.sum(axis=1))
    factor_score = 1 - _normalised_entropy(importance.T)  # (F,)
    disentanglement = float(np.sum(code_weight * code_score))
    return DCIResult(
        score=disentanglement,
        disentanglement=disentanglement,
        # disentanglement_lib weights by column sums, all 1 after normalising: a plain mean
        completeness=float(np.mean(factor_score)),
        informativeness=float(np.mean(test_accuracy)),
        importance=importance,
        code_disentanglement=code_score,
        code_weight=code_weight,
        factor_completeness=factor_score,
        train_accuracy=train_accuracy,
        test_accuracy=test_accuracy,
        settings={
            "predictor": "gradient-boosted stumps, squared loss on one-hot classes",
            "rounds": rounds,
            "shrinkage": shrinkage,
            "max_bins": max_bins,
            "split": "given" if test is not None else f"seeded {train_fraction:.0%} / rest",
            "train_samples": len(train),
            "test_samples": len(held_out),
            "seed": seed,
        },
    )


def _normalised_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of nonnegative `weights` (A, B) normalised to a distribution, in base
    B, so in [0, 1] (Eastwood & Williams 2018, H_K(P_i.)); an all-zero row counts as uniform."""
    total = weights.sum(axis=1, keepdims=True)  # (A, 1)
    uniform = np.full_like(weights, 1 / weights.shape[1])
    p = np.divide(weights, total, out=uniform, where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)  # 0 log 0 = 0
    return terms.sum(axis=1) / np.log(weights.shape[1])


def _weights(mass: np.ndarray) -> np.ndarray:
    """Shares of total mass; all equal when there is none (disentanglement_lib's fallback)."""
    total = mass.sum()
    return mass / total if total > 0 else np.full_like(mass, 1 / len(mass))
