"""The FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by Factorising", sec. 4),
as disentanglement_lib computes it, drawing batches from the given rows instead of a simulator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.inputs import check_inputs
from vaelab.errors import VaelabError

DEFINITION = (
    "FactorVAE score (Kim & Mnih 2018): fix one factor, draw a batch of samples sharing its value, "
    "and vote for the code dimension whose variance over the batch (codes scaled by their "
    "overall standard deviation) is smallest; a majority-vote classifier from dimension to "
    "factor is fitted on training votes and the score is its accuracy on evaluation votes."
)

_CHUNK = 1024  # votes per vectorised step: (chunk, batch, D) floats at a time


@dataclass(frozen=True, eq=False)
class FactorVAEResult:
    """The FactorVAE score, the votes behind it and the classifier."""

    score: float  # accuracy on the evaluation votes
    train_accuracy: float
    votes: np.ndarray  # (D, F) training votes: rows the argmin dimension, columns the factor
    assignment: np.ndarray  # (D,) factor each dimension votes for, -1 if inactive or no votes
    active: np.ndarray  # (D,) bool, std over the set >= min_std
    definition: str = DEFINITION
    settings: dict[str, object] = field(default_factory=dict)


def factorvae_score(
    codes: ArrayLike,
    factors: ArrayLike,
    *,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    n_train: int = 10_000,
    n_eval: int = 5_000,
    min_std: float = 0.05,
    seed: int = 0,
) -> FactorVAEResult:
    """FactorVAE score of `codes` (N, D) against integer `factors` (N, F).

    Each vote draws a factor k uniformly, a value of it as the value of a random row (the
    empirical distribution, as disentanglement_lib's sample_factors), then `batch_size` rows
    with that value, with replacement, and votes (argmin_j Var_batch(z_j) / Var(z_j), k)
    (Kim & Mnih 2018, sec. 4; variances with ddof=1 as disentanglement_lib). Dimensions with
    std over the set below `min_std` are left out (disentanglement_lib's prune_dims.threshold
    = 0.05 compares the std); if none are left the score is 0.
    """
    if batch_size < 2 or n_train < 1 or n_eval < 1:
        raise VaelabError(
            f"FactorVAE score: needs batch_size >= 2 and at least one train and eval vote, got "
            f"batch_size={batch_size}, n_train={n_train}, n_eval={n_eval}"
        )
    data = check_inputs(codes, factors, metric="FactorVAE score", names=names, min_samples=2)
    dims, n_factors = data.codes.shape[1], len(data.sizes)
    variance = data.codes.var(axis=0, ddof=1)  # (D,) over the whole set
    active = np.sqrt(variance) >= min_std
    settings = {
        "batch_size": batch_size,
        "train_votes": n_train,
        "eval_votes": n_eval,
        "min_std": min_std,
        "active_dims": int(active.sum()),
        "samples": data.n,
        "seed": seed,
    }
    if not active.any():
        return FactorVAEResult(
            score=0.0,
            train_accuracy=0.0,
            votes=np.zeros((dims, n_factors), dtype=np.int64),
            assignment=np.full(dims, -1),
            active=active,
            settings={**settings, "note": f"every code dimension has std < {min_std}; score 0"},
        )
    scaled = data.codes[:, active] / np.sqrt(variance[active])  # (N, D_active), unit variance
    rng = np.random.default_rng(seed)
    train_votes = _votes(scaled, data.labels, n_train, batch_size, rng)  # (D_active, F)
    eval_votes = _votes(scaled, data.labels, n_eval, batch_size, rng)
    classifier = np.argmax(train_votes, axis=1)  # (D_active,) majority factor, ties to lowest
    rows = np.arange(len(classifier))
    votes = np.zeros((dims, n_factors), dtype=np.int64)
    votes[active] = train_votes
    assignment = np.full(dims, -1)
    assignment[active] = np.where(train_votes.sum(axis=1) > 0, classifier, -1)
    return FactorVAEResult(
        score=float(eval_votes[rows, classifier].sum() / n_eval),
        train_accuracy=float(train_votes[rows, classifier].sum() / n_train),
        votes=votes,
        assignment=assignment,
        active=active,
        settings=settings,
    )


def _votes(
    scaled: np.ndarray, labels: np.ndarray, count: int, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Vote counts (D_active, F) from `count` fixed-factor batches."""
    n, n_factors = labels.shape
    order, low, high = _value_groups(labels)  # (F, N) each
    factor = rng.integers(n_factors, size=count)  # (count,) the factor kept fixed
    anchor = rng.integers(n, size=count)  # (count,) the row whose value it is fixed at
    lo, hi = low[factor, anchor], high[factor, anchor]  # its rows: order[factor, lo:hi]
    position = rng.integers(lo[:, None], hi[:, None], size=(count, batch_size))
    rows = order[factor[:, None], position]  # (count, batch)
    votes = np.zeros((scaled.shape[1], n_factors), dtype=np.int64)
    for begin in range(0, count, _CHUNK):
        chunk = slice(begin, begin + _CHUNK)
        local = scaled[rows[chunk]].var(axis=1, ddof=1)  # (chunk, D_active)
        np.add.at(votes, (np.argmin(local, axis=1), factor[chunk]), 1)
    return votes


def _value_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each factor k, the rows sorted by its value, order[k] (N,), and for each row a the
    range low[k, a]:high[k, a] of order[k] holding the rows that share a's value."""
    order = np.argsort(labels, axis=0, kind="stable").T  # (F, N)
    low, high = np.empty_like(order), np.empty_like(order)
    for k, column in enumerate(labels.T):
        start = np.searchsorted(column[order[k]], np.arange(column.max() + 2))  # (K + 1,)
        low[k], high[k] = start[column], start[column + 1]
    return order, low, high
