"""Decoder likelihoods p(x|z): the reconstruction term of every model.

`x_params` is what the decoder outputs: Bernoulli logits or Gaussian means, shaped like the data
(B, C, H, W), with any leading sample dimensions (K, B, C, H, W). Convention (one for the whole
project): log-likelihoods are summed over the values of an example, in nats, and returned per
example, (B,) or (K, B); callers take the batch mean. `nll` is `-log_prob`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.distributions import at_least_float32, gaussian_log_density


class Likelihood(nn.Module):
    """p(x|z) over images; subclasses define `log_prob`, `mean` and `check_data`."""

    name = ""

    def log_prob(self, x_params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z): x_params (..., B, C, H, W), x (B, C, H, W) -> (..., B)."""
        raise NotImplementedError

    def nll(self, x_params: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z), per example: (..., B)."""
        return -self.log_prob(x_params, x)

    def mean(self, x_params: Tensor) -> Tensor:
        """E[x|z] in data space."""
        raise NotImplementedError

    def check_data(self, x: Tensor, *, where: str) -> None:
        """Raise VaelabError when x is outside the likelihood's support."""


class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod Bernoulli(x; sigmoid(x_params)), x_params the logits. Data in [0, 1]."""

    name = "bernoulli"

    def log_prob(self, x_params: Tensor, x: Tensor) -> Tensor:
        """sum over (C, H, W) of x * l - softplus(l) for logits l: minus the binary
        cross-entropy, in a numerically stable form."""
        with torch.autocast(x_params.device.type, enabled=False):
            x_params, x = at_least_float32(x_params, x)
            if x_params.dim() == x.dim():  # one decoding per example: torch's fused kernel
                bce = F.binary_cross_entropy_with_logits(x_params, x, reduction="none")
                return -bce.flatten(1).sum(dim=1)
            # K decodings per example (importance sampling, thousands per image in `evaluate`):
            # x . l as a batched product, with no broadcast copy of x.
            logits = x_params.flatten(-3)  # (..., B, P)
            return torch.einsum("...bp,bp->...b", logits, x.flatten(1)) - F.softplus(logits).sum(-1)

    def mean(self, x_params: Tensor) -> Tensor:
        return torch.sigmoid(x_params)

    def check_data(self, x: Tensor, *, where: str) -> None:
        low, high = float(x.min()), float(x.max())
        if not (low >= 0.0 and high <= 1.0):  # written so that NaN fails too
            raise VaelabError(
                f"{where} has values in [{low:g}, {high:g}] but the bernoulli likelihood needs "
                "data in [0, 1]: rescale it or use --likelihood gaussian"
            )


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(x; x_params, sigma^2 I) with sigma fixed, or one learned scalar sigma.

    A learned shared sigma balances reconstruction against KL by itself (Rybkin et al. 2021,
    "Simple and Effective VAE Training with Calibrated Decoders").
    """

    name = "gaussian"

    def __init__(self, sigma: float | None) -> None:
        super().__init__()
        initial = 1.0 if sigma is None else sigma
        log_sigma = torch.tensor(math.log(initial))
        if sigma is None:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, x_params: Tensor, x: Tensor) -> Tensor:
        """Sum over (C, H, W) of log N(x; mean, sigma^2)."""
        with torch.autocast(x_params.device.type, enabled=False):
            x_params, x, log_sigma = at_least_float32(x_params, x, self.log_sigma)
            return gaussian_log_density(x, x_params, 2.0 * log_sigma).flatten(-3).sum(dim=-1)

    def mean(self, x_params: Tensor) -> Tensor:
        return x_params


LIKELIHOODS: dict[str, Callable[[float | None], Likelihood]] = {
    "bernoulli": lambda sigma: BernoulliLikelihood(),
    "gaussian": GaussianLikelihood,
}


def build_likelihood(name: str, *, sigma: float | None) -> Likelihood:
    """The likelihood registered as `name`; `sigma` is the Gaussian's (None = learned)."""
    return LIKELIHOODS[name](sigma)
