"""Decoder likelihoods p(x|z): the reconstruction term of every model.

Convention (one for the whole project): negative log-likelihoods are summed over the pixels of
an example, in nats, and returned per example with shape (B,); callers take the batch mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError

LOG_2PI = math.log(2.0 * math.pi)


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod Bernoulli(x; sigmoid(x_logits)). Data must lie in [0, 1]."""

    name = "bernoulli"

    def nll(self, x_logits: Tensor, x: Tensor) -> Tensor:
        """Binary cross-entropy from logits (numerically stable), summed per example: (B,)."""
        bce = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none")
        return bce.flatten(1).sum(dim=1)

    def log_prob(self, x_logits: Tensor, x: Tensor) -> Tensor:
        """log p(x|z_s) for S codes per example: x_logits (B, S, P), flat x (B, P) -> (B, S).

        x . logits - sum softplus(logits) (= -BCE): a batched matrix product instead of a
        broadcast copy of x, since this runs over thousands of samples per image in `evaluate`.
        """
        dtype = torch.promote_types(x_logits.dtype, torch.float32)  # not bfloat16 under AMP
        x_logits, x = x_logits.to(dtype), x.to(dtype)
        with torch.autocast(x_logits.device.type, enabled=False):
            return torch.bmm(x_logits, x.unsqueeze(-1)).squeeze(-1) - F.softplus(x_logits).sum(-1)

    def mean(self, x_logits: Tensor) -> Tensor:
        return torch.sigmoid(x_logits)

    def check_data(self, x: Tensor, *, where: str) -> None:
        low, high = float(x.min()), float(x.max())
        if not (low >= 0.0 and high <= 1.0):  # written so that NaN fails too
            raise VaelabError(
                f"{where} has values in [{low:g}, {high:g}] but the bernoulli likelihood needs "
                "data in [0, 1]: rescale it or use --likelihood gaussian"
            )


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; x_mean, sigma^2 I) with sigma fixed, or one learned scalar sigma.

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

    def nll(self, x_logits: Tensor, x: Tensor) -> Tensor:
        """Gaussian NLL: sum over pixels of (x - mean)^2 / (2 sigma^2) + log sigma + log(2 pi)/2."""
        # At least float32, also under autocast: bfloat16's spacing at ~1e3 nats is 8 nats.
        dtype = torch.promote_types(torch.promote_types(x_logits.dtype, x.dtype), torch.float32)
        x_logits, x, log_sigma = x_logits.to(dtype), x.to(dtype), self.log_sigma.to(dtype)
        squared_error = (x - x_logits).pow(2).flatten(1).sum(dim=1)
        n_pixels = x[0].numel()
        return 0.5 * squared_error * torch.exp(-2.0 * log_sigma) + n_pixels * (
            log_sigma + 0.5 * LOG_2PI
        )

    def log_prob(self, x_logits: Tensor, x: Tensor) -> Tensor:
        """log p(x|z_s) for S codes per example: x_logits (B, S, P), flat x (B, P) -> (B, S)."""
        dtype = torch.promote_types(x_logits.dtype, torch.float32)
        squared_error = (x.to(dtype).unsqueeze(1) - x_logits.to(dtype)).pow(2).sum(-1)
        log_sigma = self.log_sigma.to(dtype)
        n_pixels = x_logits.shape[-1]
        return -0.5 * squared_error * torch.exp(-2.0 * log_sigma) - n_pixels * (
            log_sigma + 0.5 * LOG_2PI
        )

    def mean(self, x_logits: Tensor) -> Tensor:
        return x_logits

    def check_data(self, x: Tensor, *, where: str) -> None:
        """Any finite values are fine for a Gaussian."""


Likelihood = BernoulliLikelihood | GaussianLikelihood

LIKELIHOODS: dict[str, Callable[[float | None], Likelihood]] = {
    "bernoulli": lambda sigma: BernoulliLikelihood(),
    "gaussian": GaussianLikelihood,
}


def build_likelihood(name: str, *, sigma: float | None) -> Likelihood:
    """The likelihood registered as `name`; `sigma` is the Gaussian's (None = learned)."""
    return LIKELIHOODS[name](sigma)
