"""Priors p(z) (or p(z|y)) of the latent-variable models.

A prior gives `log_prob(z)`, `sample(n)` and, where one exists in closed form, `kl(posterior)`;
where it returns None the bound falls back to a Monte Carlo estimate, log q(z|x) - log p(z) at
the sampled z. Learned and conditional priors plug in here; the condition y is ignored by
unconditional ones.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.distributions import (
    DiagonalGaussian,
    Posterior,
    at_least_float32,
    gaussian_log_density,
)


class Prior(nn.Module):
    """p(z), or p(z|y) for a conditional prior, over D latent dimensions."""

    title: ClassVar[str] = "a learned prior"  # how model cards and exports name it

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def describe(self) -> str:
        """How reports and `vaelab eval` name this prior."""
        return self.title

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        """log p(z) summed over D: z (..., B, D) -> (..., B)."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """n codes z ~ p(z): (n, D), on `device` in `dtype` (the caller's)."""
        raise NotImplementedError

    def kl_per_dim(self, posterior: Posterior, *, y: Tensor | None = None) -> Tensor | None:
        """KL(q || p) of each latent dimension, (B, D), where it has a closed form, else None."""
        return None

    def kl(self, posterior: Posterior, *, y: Tensor | None = None) -> Tensor | None:
        """KL(q || p) per example, (B,), where it has a closed form, else None (the bound then
        estimates it by Monte Carlo)."""
        per_dim = self.kl_per_dim(posterior, y=y)
        return None if per_dim is None else per_dim.sum(dim=-1)


class StandardNormalPrior(Prior):
    """p(z) = N(0, I). No parameters (and no state_dict entries)."""

    title = "N(0, I)"

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        return gaussian_log_density(z, 0.0, 0.0).sum(dim=-1)

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)

    def kl_per_dim(self, posterior: Posterior, *, y: Tensor | None = None) -> Tensor | None:
        """Closed form for a diagonal Gaussian q (Kingma & Welling 2013, appendix B):
        -1/2 * (1 + logvar - mu^2 - sigma^2)."""
        if not isinstance(posterior, DiagonalGaussian):
            return None
        mu, logvar = at_least_float32(posterior.mu, posterior.logvar)
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class ConditionalGaussianPrior(Prior):
    """A learned p(z|c) = N(mu(c), diag(exp(logvar(c)))) (Sohn et al. 2015's prior network),
    c the condition vector (B, F) that `y` carries here.

    `net` maps c to 2 D values, the mean and log-variance. It starts close to N(0, I) for
    every condition (its last layer scaled down 100-fold, its bias zero), so training begins
    near the unconditional model; not at it exactly, which would stop the gradients of the
    layers before the last one in the first step.
    """

    title = "a learned conditional Gaussian p(z|y)"

    def __init__(self, latent_dim: int, net: nn.Module) -> None:
        super().__init__(latent_dim)
        self.net = net
        last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()

    def gaussian(self, c: Tensor | None) -> DiagonalGaussian:
        """p(z|c) for the conditions c (B, F)."""
        if c is None:
            raise VaelabError("this prior is conditional: pass the condition")
        weight = next(self.net.parameters())
        mu, logvar = self.net(c.to(weight.dtype)).chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        return self.gaussian(y).log_prob(z)

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        prior = self.gaussian(y)
        if len(prior) != n:
            raise VaelabError(f"draw one code per condition: {len(prior)} conditions, n = {n}")
        eps = torch.randn(prior.mu.shape, generator=generator, device=device, dtype=dtype)
        return prior.mu.to(eps) + prior.std.to(eps) * eps

    def kl_per_dim(self, posterior: Posterior, *, y: Tensor | None = None) -> Tensor | None:
        """KL between diagonal Gaussians, per dimension: (logvar_p - logvar_q
        + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 - 1) / 2."""
        if not isinstance(posterior, DiagonalGaussian):
            return None
        prior = self.gaussian(y)
        mu_q, logvar_q, mu_p, logvar_p = at_least_float32(
            posterior.mu, posterior.logvar, prior.mu, prior.logvar
        )
        ratio = (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)
        return 0.5 * (logvar_p - logvar_q + ratio - 1.0)
