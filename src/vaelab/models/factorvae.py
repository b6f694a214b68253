"""FactorVAE (Kim & Mnih 2018): the ELBO plus gamma times the total correlation of q(z),
estimated by a discriminator that tells codes z ~ q(z) from codes whose dimensions were
permuted independently across the batch (samples of prod_d q(z_d))."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vaelab.models.autoencoders import LossTerms
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.vae import VAE

REAL, PERMUTED = 0, 1  # the discriminator's two logits: z from q(z), or from prod_d q(z_d)
DISCRIMINATOR_BETAS = (0.5, 0.9)  # Adam's betas for the discriminator (Kim & Mnih, sec. 4)


def permute_dims(z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """z (B, D) with each dimension shuffled across the batch by its own permutation
    (Kim & Mnih 2018, algorithm 1): a sample of prod_d q(z_d) from a sample of q(z)."""
    keys = torch.rand(z.shape, generator=generator, device=z.device)
    return z.gather(0, keys.argsort(dim=0))


def build_discriminator(latent_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """An MLP from z (B, D) to two logits (B, 2); LeakyReLU(0.2) as in the paper."""
    layers: list[nn.Module] = []
    width = latent_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LeakyReLU(0.2)]
        width = size
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


class FactorVAE(VAE):
    """A VAE trained on recon + beta KL + gamma TC(z), TC estimated by `discriminator`
    (Kim & Mnih 2018, eq. 2 and sec. 3). The discriminator is trained alongside on the same
    batch (as disentanglement_lib does; the paper draws a second batch) with its own Adam
    settings; its loss is `LossTerms.auxiliary`.
    """

    title = "FactorVAE"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.discriminator = build_discriminator(config.latent_dim, config.discriminator_hidden)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        own = set(map(id, self.discriminator.parameters()))
        vae = [p for p in self.parameters() if id(p) not in own]
        discriminator = {
            "params": list(self.discriminator.parameters()),
            "lr": self.config.discriminator_lr,
            "betas": DISCRIMINATOR_BETAS,
            "weight_decay": 0.0,  # the paper's Adam; --weight-decay is for the model's weights
            "fixed_lr": True,
        }
        return [{"params": vae}, discriminator]

    def total_correlation(self, z: Tensor) -> Tensor:
        """The density-ratio estimate of TC(z) at the codes z (B, D), per example (B,):
        log D(z) / (1 - D(z)) = logit_real - logit_permuted. Gradients reach z, never the
        discriminator's weights (it reads detached copies), so the VAE's loss cannot train it."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (z,))
        return logits[:, REAL] - logits[:, PERMUTED]

    def discriminator_loss(self, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Cross-entropy of telling z (B, D) ~ q(z) from its dimension-wise permutation; the
        codes are detached, so this trains the discriminator alone."""
        real = z.detach()
        permuted = permute_dims(real, generator=generator)
        logits = self.discriminator(torch.cat([real, permuted]))  # (2B, 2)
        labels = torch.full((len(real),), REAL, device=z.device)
        labels = torch.cat([labels, torch.full_like(labels, PERMUTED)])
        return F.cross_entropy(logits.float(), labels)

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
        assert self.config.gamma is not None  # ModelConfig fills in the factorvae's default
        kl_mean = kl.mean()
        tc = self.total_correlation(z).float().mean()
        total = recon + kl_scale * (self.config.beta * kl_mean + self.config.gamma * tc)
        auxiliary = self.discriminator_loss(z, generator=generator)
        return LossTerms(total=total, recon=recon, kl=kl_mean, auxiliary=auxiliary)
