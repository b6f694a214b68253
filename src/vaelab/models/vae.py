"""The variational autoencoder (Kingma & Welling 2013): a Gaussian posterior q(z|x), or a flow
posterior built on one (flows.py), a prior p(z), a decoder p(x|z), trained on the ELBO or the
importance-weighted bound."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.models.autoencoders import Autoencoder, LossTerms
from vaelab.models.bounds import log_mean_exp
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.flows import FlowPosterior, build_flow, flow_context_features
from vaelab.models.learned_priors import VampPrior, build_prior


class VAE(Autoencoder):
    """A Gaussian encoder, the unit Gaussian prior, and a beta-weighted KL (Higgins et al. 2017).

    `config.objective` and `config.k` choose the bound `loss` minimises; see `loss`.
    """

    has_prior = True
    stochastic_encoder = True
    title = "VAE"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.prior = build_prior(config)  # N(0, I) unless config.prior names a learned one
        if isinstance(self.prior, VampPrior):
            self.prior.attach(self.gaussian_posterior, self)
        self.flow = build_flow(config)  # None unless config.flow names one

    def _encoder_outputs(self) -> int:
        # mu and log-variance, then a flow's context (none without a flow)
        return 2 * self.config.latent_dim + flow_context_features(self.config)

    def gaussian_posterior(self, x: Tensor) -> DiagonalGaussian:
        """The encoder's Gaussian q(z|x), before any flow: what a VampPrior mixes."""
        self.check_images(x)
        mu, logvar = self.encoder(x)[:, : 2 * self.config.latent_dim].chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar)  # (B, D) each

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian | FlowPosterior:
        """q(z|x): the encoder's Gaussian, or with `config.flow` that Gaussian through the flow,
        whose context (B, C) is the encoder's outputs after mu and logvar."""
        self.check_images(x)
        if self.flow is None:
            mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, D) each
            return DiagonalGaussian(mu, logvar)
        outputs = self.encoder(x)  # (B, 2 D + C)
        d = self.config.latent_dim
        base = DiagonalGaussian(outputs[:, :d], outputs[:, d : 2 * d])
        return FlowPosterior(base, self.flow, outputs[:, 2 * d :])

    def loss(
        self,
        x: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """The negative of a lower bound on log p(x), with the KL weighted by beta * kl_scale.

        objective "elbo": the negative ELBO (Kingma & Welling 2013, eq. 10), its reconstruction
        term averaged over k reparameterised samples. objective "iwae": the negative
        importance-weighted bound of Burda et al. (2015) with k samples, which is the ELBO at
        k = 1 (computed as such). `recon` and `kl` are always the ELBO's terms; `kl_scale` is
        the trainer's KL warm-up.
        """
        posterior = self.encode(x, y)
        prior_y = self.prior_condition(x, y)  # y itself; a conditional model's condition vector
        # The closed-form KL (None without one) before the samples: autograd then adds the
        # gradients into mu and logvar in the order it always has, so runs repeat bit for bit.
        closed_kl = self.require_prior().kl(posterior, y=prior_y)
        weight = self.config.beta * kl_scale
        k = self.config.k
        if k == 1:
            if closed_kl is None:  # a Monte Carlo KL, at the draw's own log q(z|x)
                z, log_qz = posterior.rsample_with_log_prob(generator=generator)  # (B, D), (B,)
                kl = self.kl(posterior, z, y=prior_y, log_qz=log_qz)
            else:
                z, kl = posterior.rsample(generator=generator), closed_kl
            recon = -self.log_likelihood(self.decode_params(z, x, y), x).mean()
            return self.regularised(
                recon, posterior, z, kl, y=y, kl_scale=kl_scale, generator=generator
            )
        z, log_qz = posterior.rsample_with_log_prob(k=k, generator=generator)  # (K, B, D)
        terms = self.importance_terms(x, z, posterior, y=y, log_qz=log_qz)
        recon = -terms.log_px_z.mean()
        # without a closed form, the KL is Monte Carlo at the terms' own log q and log p
        kl = (terms.log_qz - terms.log_pz).mean() if closed_kl is None else closed_kl.mean()
        if self.config.objective == "iwae":
            total = -log_mean_exp(terms.log_weights(kl_weight=weight), dim=0).mean()
            return LossTerms(total=total, recon=recon, kl=kl)
        return LossTerms(total=recon + weight * kl, recon=recon, kl=kl)

    def regularised(
        self,
        recon: Tensor,
        posterior: DiagonalGaussian | FlowPosterior,
        z: Tensor,
        kl: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """The one-sample ELBO's loss from its reconstruction term `recon` (a batch mean) and
        the KL of each example `kl` (B,), at the codes z (B, D) drawn from `posterior`.

        The VAE's: recon + beta * kl_scale * KL; with `capacity` C > 0, Burgess et al.'s (2018,
        eq. 8) recon + gamma * |KL - C_t| with C_t = kl_scale * C, so that the KL warm-up raises
        the capacity linearly. The disentangling VAEs override this.
        """
        kl_mean = kl.mean()
        capacity = self.config.capacity
        if capacity > 0:
            penalty = self.config.capacity_gamma * (kl_mean - kl_scale * capacity).abs()
        else:
            penalty = self.config.beta * kl_scale * kl_mean
        return LossTerms(total=recon + penalty, recon=recon, kl=kl_mean)
