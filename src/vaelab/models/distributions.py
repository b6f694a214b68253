"""Posterior distributions q(z|x), and the one Gaussian log-density every model part uses.

Sample shapes follow torch.distributions: draws of k samples put the sample dimension first,
(K, B, D); `log_prob` accepts any leading sample dimensions.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def at_least_float32(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors in float32 or wider: log-densities of bfloat16 network outputs (under
    autocast) would be off by whole nats (bfloat16's spacing near 1e3 is 8)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return tuple(tensor.to(dtype) for tensor in tensors)


def gaussian_log_density(x: Tensor, mean: Tensor | float, logvar: Tensor | float) -> Tensor:
    """log N(x; mean, exp(logvar)) elementwise (not summed), in float32 or wider; arguments
    broadcast.

    The project's only Gaussian log-density: posteriors, the N(0, I) prior and the Gaussian
    likelihood all sum it over their own dimensions.
    """
    x, mean, logvar = at_least_float32(
        x, torch.as_tensor(mean, device=x.device), torch.as_tensor(logvar, device=x.device)
    )
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar))


class DiagonalGaussian:
    """N(mu, diag(exp(logvar))), batched over the leading dimension. Shapes: (B, D).

    The parameters are kept in float32 or wider: an encoder under bfloat16 autocast outputs
    bfloat16, whose samples and densities would be coarse (a no-op in fp32)."""

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        self.mu, self.logvar = at_least_float32(mu, logvar)

    @property
    def mean(self) -> Tensor:
        return self.mu

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> Tensor:
        return self.mu

    def __len__(self) -> int:
        return len(self.mu)

    def __getitem__(self, index: slice | Tensor) -> DiagonalGaussian:
        """The posteriors of some examples of the batch."""
        return DiagonalGaussian(self.mu[index], self.logvar[index])

    def rsample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample z = mu + sigma * eps (Kingma & Welling 2013, eq. 10).

        Returns (B, D), or (K, B, D) when `k` is given. Gradients flow to mu and logvar.
        """
        shape = self.mu.shape if k is None else (k, *self.mu.shape)
        eps = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.std * eps

    def sample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """As `rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(k=k, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over D; z is (..., B, D), the result (..., B)."""
        return gaussian_log_density(z, self.mu, self.logvar).sum(dim=-1)

    def rsample_with_log_prob(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """`rsample` and log q(z|x) at the draws: (B, D) and (B,), or (K, B, D) and (K, B).

        What the bounds use: a flow posterior knows its density at its own draws only."""
        z = self.rsample(k=k, generator=generator)
        return z, self.log_prob(z)

    def entropy(self) -> Tensor:
        """H[q] = sum_d (1 + log 2 pi + logvar_d) / 2, per example: (B,)."""
        (logvar,) = at_least_float32(self.logvar)
        return 0.5 * (1.0 + LOG_2PI + logvar).sum(dim=-1)


class PointMass:
    """The deterministic 'posterior' of a standard autoencoder: all mass at z. Shape (B, D),
    float32 or wider (as DiagonalGaussian's)."""

    def __init__(self, z: Tensor) -> None:
        (self.z,) = at_least_float32(z)

    @property
    def mean(self) -> Tensor:
        return self.z

    def mode(self) -> Tensor:
        return self.z

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, index: slice | Tensor) -> PointMass:
        return PointMass(self.z[index])

    def rsample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z itself, (B, D), or repeated k times, (K, B, D)."""
        return self.z if k is None else self.z.expand(k, *self.z.shape)

    sample = rsample

    def rsample_with_log_prob(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """z, and log q = 0: all the mass is there (a VQ-VAE's bound counts its code once)."""
        z = self.rsample(k=k)
        return z, z.new_zeros(z.shape[:-1])


class Posterior(Protocol):
    """What every q(z|x) offers: a diagonal Gaussian, a point mass, a flow's posterior
    (flows.py), a hierarchy's (hierarchical.py). `log_prob` at arbitrary codes exists where
    the density is computable there; the bounds take log q from `rsample_with_log_prob`."""

    @property
    def mean(self) -> Tensor: ...

    def mode(self) -> Tensor: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | Tensor) -> Posterior: ...

    def rsample(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor: ...

    def sample(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor: ...

    def rsample_with_log_prob(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...
