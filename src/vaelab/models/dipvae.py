"""DIP-VAE I and II (Kumar, Sattigeri & Balakrishnan 2018): the ELBO plus a penalty that moves
the covariance of the aggregate posterior q(z) towards the prior's identity."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.models.autoencoders import LossTerms
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.vae import VAE


def posterior_covariance(posterior: DiagonalGaussian, dip_type: str) -> Tensor:
    """The batch estimate of Cov_q(z), (D, D). Type "i": Cov_p(x)[mu(x)] (Kumar et al. 2018,
    eq. 6); type "ii": that plus E_p(x)[diag sigma^2(x)], the whole covariance of q(z) (eq. 7)."""
    mu = posterior.mu  # (B, D)
    centred = mu - mu.mean(dim=0, keepdim=True)
    # The batch's (biased) covariance, as in the paper; elementwise, not a matmul, so that
    # bfloat16 autocast (--amp) leaves it in fp32.
    cov = (centred[:, :, None] * centred[:, None, :]).mean(dim=0)  # (D, D)
    if dip_type == "ii":
        cov = cov + torch.diag(posterior.logvar.exp().mean(dim=0))
    return cov


def dip_penalty(cov: Tensor, lambda_od: float, lambda_d: float) -> Tensor:
    """lambda_od sum_{i != j} Cov_ij^2 + lambda_d sum_i (Cov_ii - 1)^2 (Kumar et al. 2018,
    eq. 6)."""
    diagonal = torch.diagonal(cov)
    off_diagonal = cov - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum() + lambda_d * (diagonal - 1).pow(2).sum()


class DIPVAE(VAE):
    """A VAE trained on recon + beta KL + the DIP penalty of `dip_type` ("i" or "ii"), weighted
    by `lambda_od` and `lambda_d` (by default 10 lambda_od for type i, lambda_od for type ii,
    as in the paper). The KL warm-up scales the KL, not the penalty."""

    title = "DIP-VAE"

    def regularised(
        self,
        recon: Tensor,
        posterior: DiagonalGaussian,
        z: Tensor,
        kl: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        config = self.config
        assert config.lambda_d is not None  # ModelConfig fills in the dipvae's default
        kl_mean = kl.mean()
        cov = posterior_covariance(posterior, config.dip_type)
        penalty = dip_penalty(cov, config.lambda_od, config.lambda_d)
        total = recon + config.beta * kl_scale * kl_mean + penalty
        return LossTerms(total=total, recon=recon, kl=kl_mean)
