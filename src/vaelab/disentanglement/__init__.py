"""Disentanglement metrics computed by vaelab's own NumPy code: MIG, DCI, SAP and the FactorVAE
score, deterministic from a seed, each result carrying its definition and settings.

Inputs are plain arrays: `codes` (N, D) posterior means, `factors` (N, F) integer factor values
from a full factor grid or a random subset of one, and `categorical` (F,) flags for the unordered
factors. Bad input raises `vaelab.errors.VaelabError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence

from numpy.typing import ArrayLike

from vaelab.disentanglement.boosting import BoostedStumps, fit_stumps
from vaelab.disentanglement.dci import DCIResult, dci
from vaelab.disentanglement.factorvae_score import FactorVAEResult, factorvae_score
from vaelab.disentanglement.mig import MIGResult, mig
from vaelab.disentanglement.mig_posterior import PosteriorMIGResult, mig_posterior
from vaelab.disentanglement.mutual_info import entropy, mutual_info
from vaelab.disentanglement.sap import SAPResult, sap

__all__ = [
    "BoostedStumps",
    "DCIResult",
    "FactorVAEResult",
    "MIGResult",
    "PosteriorMIGResult",
    "SAPResult",
    "dci",
    "entropy",
    "factorvae_score",
    "fit_stumps",
    "mig",
    "mig_posterior",
    "mutual_info",
    "sap",
    "score_all",
]


def score_all(
    codes: ArrayLike,
    factors: ArrayLike,
    categorical: Sequence[bool],
    *,
    names: Sequence[str] | None = None,
    test: tuple[ArrayLike, ArrayLike] | None = None,
    seed: int = 0,
) -> dict[str, MIGResult | DCIResult | SAPResult | FactorVAEResult]:
    """All four metrics, with their default settings, on one set of arrays: a dict with keys
    "mig", "dci", "sap", "factorvae". `test` = (test_codes, test_factors) is a held-out set for
    the metrics that train a predictor (DCI, SAP); without it they split `codes` by `seed`."""
    return {
        "mig": mig(codes, factors, names=names),
        "dci": dci(codes, factors, test=test, names=names, seed=seed),
        "sap": sap(codes, factors, categorical, test=test, names=names, seed=seed),
        "factorvae": factorvae_score(codes, factors, names=names, seed=seed),
    }
