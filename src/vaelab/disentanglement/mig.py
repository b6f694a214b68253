"""The mutual information gap, MIG (Chen et al. 2018, "Isolating Sources of Disentanglement in
Variational Autoencoders", sec. 5), as disentanglement_lib computes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.binning import equal_width_bins
from vaelab.disentanglement.inputs import check_inputs
from vaelab.disentanglement.mutual_info import factor_entropies, mutual_info_matrix
from vaelab.errors import VaelabError

DEFINITION = (
    "MIG (Chen et al. 2018): for each factor v_k, the gap between the largest and second-largest "
    "mutual information I(z_j; v_k) over code dimensions j, divided by the entropy H(v_k), "
    "averaged over factors; codes discretised into equal-width bins, plug-in estimates in nats "
    "(as disentanglement_lib)."
)


@dataclass(frozen=True, eq=False)
class MIGResult:
    """MIG and the quantities it is made of."""

    score: float  # mean of per_factor, in [0, 1]
    per_factor: np.ndarray  # (F,) normalised gap
    mutual_info: np.ndarray  # (D, F) I(z_j; v_k), nats
    factor_entropy: np.ndarray  # (F,) H(v_k), nats
    top_code: np.ndarray  # (F,) the code dimension j with the largest I(z_j; v_k)
    definition: str = DEFINITION
    settings: dict[str, object] = field(default_factory=dict)


def normalised_gaps(info: np.ndarray, entropy: np.ndarray) -> np.ndarray:
    """Per factor, (largest - second-largest I(z_j; v_k) over latents j) / H(v_k): info (D, F)
    and entropy (F,) in nats give the (F,) terms that MIG averages."""
    ranked = np.sort(info, axis=0)[::-1]  # (D, F) descending over latents
    return (ranked[0] - ranked[1]) / entropy


def mig(
    codes: ArrayLike, factors: ArrayLike, *, bins: int = 20, names: Sequence[str] | None = None
) -> MIGResult:
    """MIG of `codes` (N, D) against integer `factors` (N, F).

    Each code dimension goes into `bins` equal-width bins over its own range (Chen et al. use
    the posterior; disentanglement_lib bins the means, as here). Then per factor k
    (Chen et al. 2018, sec. 5):  MIG_k = (I(z_j(1); v_k) - I(z_j(2); v_k)) / H(v_k),
    j(1), j(2) the dimensions with the largest and second-largest mutual information.
    """
    if bins < 2:
        raise VaelabError(f"MIG: bins must be at least 2, got {bins}")
    data = check_inputs(codes, factors, metric="MIG", names=names, min_dims=2)
    binned = equal_width_bins(data.codes, bins)  # (N, D)
    info = mutual_info_matrix(binned, data.labels, bins, data.sizes)  # (D, F)
    entropy = factor_entropies(data.labels)  # (F,), > 0: every factor has two values
    per_factor = normalised_gaps(info, entropy)
    return MIGResult(
        score=float(np.mean(per_factor)),
        per_factor=per_factor,
        mutual_info=info,
        factor_entropy=entropy,
        top_code=np.argmax(info, axis=0),
        settings={
            "bins": bins,
            "binning": "equal width over each dimension's range",
            "samples": data.n,
            "factor_sizes": dict(zip(data.names, data.sizes, strict=True)),
        },
    )
