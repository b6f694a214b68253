"""β-TCVAE (Chen, Li, Grosse & Duvenaud 2018): the ELBO's KL split into the index-code mutual
information, the total correlation of q(z) and the dimension-wise KL, each with its own weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models.autoencoders import LossTerms
from vaelab.models.distributions import DiagonalGaussian, gaussian_log_density
from vaelab.models.vae import VAE


@dataclass(frozen=True)
class KLDecomposition:
    """Chen et al.'s (2018, eq. 2) terms, batch means in nats: mutual_info + total_correlation +
    dimensionwise_kl = E[log q(z|x) - log p(z)], the Monte Carlo KL at the same codes."""

    mutual_info: Tensor  # I_q(x; z) = E[log q(z|x) - log q(z)]
    total_correlation: Tensor  # KL(q(z) || prod_d q(z_d)) = E[log q(z) - sum_d log q(z_d)]
    dimensionwise_kl: Tensor  # sum_d KL(q(z_d) || p(z_d)) = E[sum_d log q(z_d) - log p(z)]


def decompose_kl(
    posterior: DiagonalGaussian, z: Tensor, log_pz: Tensor, dataset_size: int
) -> KLDecomposition:
    """The KL decomposition at the codes z (B, D), each drawn from its own example's posterior,
    with q(z) and q(z_d) estimated by minibatch-weighted sampling (Chen et al. 2018, sec. 4.1):

        log q(z_i) ~= logsumexp_j log q(z_i | x_j) - log(N M),

    for a batch of M = B examples from a dataset of N. `log_pz` is log p(z), (B,).
    """
    batch = z.shape[0]
    if dataset_size < batch:
        raise VaelabError(
            f"the dataset size {dataset_size} is below the batch size {batch}: the estimator "
            "of q(z) needs the number of training examples"
        )
    # log q(z_i,d | x_j) for every pair of examples: (B_i, B_j, D)
    pairs = gaussian_log_density(z[:, None, :], posterior.mu[None], posterior.logvar[None])
    log_nm = math.log(batch * dataset_size)
    log_qz = torch.logsumexp(pairs.sum(dim=2), dim=1) - log_nm  # (B,)
    log_prod_qzd = (torch.logsumexp(pairs, dim=1) - log_nm).sum(dim=1)  # (B,)
    log_qz_x = posterior.log_prob(z)  # (B,)
    return KLDecomposition(
        mutual_info=(log_qz_x - log_qz).mean(),
        total_correlation=(log_qz - log_prod_qzd).mean(),
        dimensionwise_kl=(log_prod_qzd - log_pz).mean(),
    )


class BetaTCVAE(VAE):
    """A VAE whose loss is recon + alpha I(x; z) + beta TC(z) + gamma sum_d KL(q(z_d) || p(z_d))
    (Chen et al. 2018, eq. 4), with the weights `alpha`, `beta` and `gamma` of its config; the
    KL warm-up scales all three. alpha = beta = gamma = 1 is the ELBO (in expectation); the
    paper's disentangling setting is alpha = gamma = 1, beta = 6.
    """

    title = "β-TCVAE"
    needs_dataset_size = True

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
        if config.dataset_size is None:
            raise VaelabError(
                "a btcvae needs ModelConfig(dataset_size=N), the number of training examples "
                "(vaelab train sets it from the data)"
            )
        terms = decompose_kl(
            posterior, z, self.require_prior().log_prob(z, y=y), config.dataset_size
        )
        assert config.gamma is not None  # ModelConfig fills in the btcvae's default
        penalty = (
            config.alpha * terms.mutual_info
            + config.beta * terms.total_correlation
            + config.gamma * terms.dimensionwise_kl
        )
        return LossTerms(total=recon + kl_scale * penalty, recon=recon, kl=kl.mean())
