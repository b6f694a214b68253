"""Importance-weighted bounds on log p(x) (Burda, Grosse & Salakhutdinov 2015).

For z_k ~ q(z|x), the log importance weights are
    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),
and log (1/K) sum_k w_k is a lower bound on log p(x) that tightens as K grows (the ELBO at
K = 1). Tables of log weights are (K, B): K samples of each of B examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImportanceTerms:
    """The three log-densities at K samples of each of B examples, each (K, B)."""

    log_px_z: Tensor  # log p(x|z_k)
    log_pz: Tensor  # log p(z_k), the prior
    log_qz: Tensor  # log q(z_k|x), the posterior

    def log_weights(self, *, kl_weight: float = 1.0) -> Tensor:
        """log w = log p(x|z) + kl_weight * (log p(z) - log q(z|x)), (K, B).

        `kl_weight` is the trainer's KL warm-up times beta; 1 gives the true weights.
        """
        return self.log_px_z + kl_weight * (self.log_pz - self.log_qz)


def log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """log (1/K) sum_k exp(log_w_k), stably (logsumexp)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
