"""The separated attribute predictability score, SAP (Kumar, Sattigeri & Balakrishnan 2018,
"Variational Inference of Disentangled Latent Concepts from Unlabeled Observations", sec. 3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.binning import apply_edges, quantile_edges
from vaelab.disentanglement.inputs import check_categorical, train_test_data

DEFINITION = (
    "SAP (Kumar et al. 2018): a score matrix S (D, F) of how well each single code dimension "
    "predicts each factor (R^2 of a linear fit for ordinal factors; for categorical ones "
    "vaelab's chance-corrected balanced accuracy of a binned one-dimensional classifier), and "
    "the mean over factors of the gap between the two largest entries of each column."
)


@dataclass(frozen=True, eq=False)
class SAPResult:
    """SAP, its score matrix and the per-factor gaps."""

    score: float  # mean of per_factor
    per_factor: np.ndarray  # (F,) gap between the top two entries of each column
    matrix: np.ndarray  # (D, F) S_jk in [0, 1]
    top_code: np.ndarray  # (F,) the code dimension with the largest S_jk
    definition: str = DEFINITION
    settings: dict[str, object] = field(default_factory=dict)


def sap(
    codes: ArrayLike,
    factors: ArrayLike,
    categorical: Sequence[bool],
    *,
    test: tuple[ArrayLike, ArrayLike] | None = None,
    names: Sequence[str] | None = None,
    train_fraction: float = 0.8,
    seed: int = 0,
    bins: int = 20,
) -> SAPResult:
    """SAP of `codes` (N, D) against integer `factors` (N, F), `categorical` (F,) flagging the
    unordered factors.

    Ordinal factor k: S_jk = R^2 of the least-squares line predicting the factor value from z_j
    on the train part, which is corr(z_j, v_k)^2 (the paper's continuous case; 0 for a constant
    z_j, as disentanglement_lib). Categorical factor k (vaelab's choice; disentanglement_lib
    fits a linear SVM): `bins` equal-frequency bins of z_j on the train part, each predicting
    its class with the most train rows relative to the class's train count; S_jk = the balanced
    accuracy b on the test part rescaled as (b - 1/K) / (1 - 1/K), K the classes in the test
    part, so that chance is 0; below-chance values are set to 0.
    """
    data, train, held_out = train_test_data(
        codes, factors, test, metric="SAP", names=names, train_fraction=train_fraction, seed=seed
    )
    flags = check_categorical(categorical, data, metric="SAP")
    matrix = np.zeros((data.codes.shape[1], len(flags)))
    ordinal = ~flags
    matrix[:, ordinal] = _squared_correlation(data.codes[train], data.values[train][:, ordinal])
    for k in np.flatnonzero(flags):
        for j in range(data.codes.shape[1]):
            matrix[j, k] = _binned_classifier_score(
                data.codes[train, j],
                data.labels[train, k],
                data.codes[held_out, j],
                data.labels[held_out, k],
                bins=bins,
            )
    ranked = np.sort(matrix, axis=0)[::-1]  # (D, F) descending over codes
    per_factor = ranked[0] - ranked[1]  # Kumar et al. 2018, sec. 3: top-two difference
    return SAPResult(
        score=float(np.mean(per_factor)),
        per_factor=per_factor,
        matrix=matrix,
        top_code=np.argmax(matrix, axis=0),
        settings={
            "ordinal": "R^2 of a linear fit on the train part",
            "categorical": f"balanced accuracy of {bins} equal-frequency bins, chance = 0",
            "categorical_factors": [n for n, c in zip(data.names, flags, strict=True) if c],
            "split": "given" if test is not None else f"seeded {train_fraction:.0%} / rest",
            "train_samples": len(train),
            "test_samples": len(held_out),
            "seed": seed,
        },
    )


def _squared_correlation(z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """corr(z_j, v_k)^2 for codes (n, D) and factor values (n, F'): (D, F'); 0 where z_j is
    constant. Every factor takes two values, so var(v_k) > 0."""
    zc = z - z.mean(axis=0)
    vc = v - v.mean(axis=0)
    cov = zc.T @ vc  # (D, F'), n times the covariance
    z_var = np.square(zc).sum(axis=0)  # (D,)
    v_var = np.square(vc).sum(axis=0)  # (F',)
    constant = np.ptp(z, axis=0) == 0
    z_var = np.where(constant, 1.0, z_var)
    r2 = np.square(cov) / np.outer(z_var, v_var)
    return np.where(constant[:, None], 0.0, np.minimum(r2, 1.0))


def _binned_classifier_score(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *, bins: int
) -> float:
    """Chance-corrected balanced test accuracy of a one-dimensional binned classifier."""
    edges = quantile_edges(z_train, bins)
    n_bins, n_classes = len(edges) + 1, int(max(y_train.max(), y_test.max())) + 1
    table = np.bincount(
        apply_edges(z_train, edges) * n_classes + y_train, minlength=n_bins * n_classes
    ).reshape(n_bins, n_classes)  # (bins, K) train counts
    class_count = table.sum(axis=0)  # (K,)
    # class_weight="balanced": a bin votes for the class most over-represented in it
    weight = np.divide(1.0, class_count, out=np.zeros(n_classes), where=class_count > 0)
    predicted = np.argmax(table * weight, axis=1)[apply_edges(z_test, edges)]  # (n_test,)
    present = np.unique(y_test)
    recall = [np.mean(predicted[y_test == c] == c) for c in present]
    balanced = float(np.mean(recall))
    chance = 1 / len(present)
    if len(present) < 2:
        return 0.0  # a test part with one class cannot tell a classifier from chance
    return max(0.0, (balanced - chance) / (1 - chance))
