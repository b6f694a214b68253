"""Posterior distributions q(z|x): each formula written once, here."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


class DiagonalGaussian:
    """N(mu, diag(exp(logvar))), batched over the leading dimension. Shapes: (B, D)."""

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        self.mu = mu
        self.logvar = logvar

    @property
    def mean(self) -> Tensor:
        return self.mu

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> Tensor:
        return self.mu

    def sample(self, *, generator: torch.Generator | None = None, k: int | None = None) -> Tensor:
        """Reparameterised sample z = mu + sigma * eps (Kingma & Welling 2013, eq. 10).

        Returns (B, D), or (K, B, D) when `k` is given. Gradients flow to mu and logvar.
        """
        shape = self.mu.shape if k is None else (k, *self.mu.shape)
        eps = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.std * eps

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) in closed form, summed over D: (B,)."""
        return self.kl_per_dim().sum(dim=-1)

    def kl_per_dim(self) -> Tensor:
        """KL(q || N(0, I)) of each latent dimension: (B, D).

        Kingma & Welling 2013, appendix B: -1/2 * (1 + logvar - mu^2 - sigma^2).
        """
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over D; z is (..., B, D), the result (..., B)."""
        return -0.5 * torch.sum(
            LOG_2PI + self.logvar + (z - self.mu).pow(2) * torch.exp(-self.logvar), dim=-1
        )


class PointMass:
    """The deterministic 'posterior' of a standard autoencoder: all mass at z. Shape (B, D)."""

    def __init__(self, z: Tensor) -> None:
        self.z = z

    @property
    def mean(self) -> Tensor:
        return self.z

    def mode(self) -> Tensor:
        return self.z

    def sample(self, *, generator: torch.Generator | None = None, k: int | None = None) -> Tensor:
        return self.z if k is None else self.z.expand(k, *self.z.shape)


Posterior = DiagonalGaussian | PointMass


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * torch.sum(LOG_2PI + z.pow(2), dim=-1)
