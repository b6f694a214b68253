"""The models: a standard autoencoder, a denoising one and the VAE, with one shared API.

Every model maps x (B, C, H, W) to a posterior over z (B, D) with `encode`, and z back to data
space with `decode`. `loss` returns `LossTerms`, per the project's convention: summed over pixels
and latent dimensions per example, averaged over the batch, in nats per example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.bounds import draw_noise, log_mean_exp, log_weights
from vaelab.distributions import DiagonalGaussian, PointMass, Posterior
from vaelab.errors import VaelabError
from vaelab.likelihoods import build_likelihood
from vaelab.models.autoregressive import build_context
from vaelab.models.config import ModelConfig
from vaelab.models.networks import build_decoder, build_encoder


@dataclass(frozen=True)
class LossTerms:
    """Batch means, in nats per example. `total = recon + beta * kl_scale * kl` for a VAE."""

    total: Tensor
    recon: Tensor
    kl: Tensor


def slerp(z_a: Tensor, z_b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for latent spaces). z: (D,), t: (T,)."""
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:  # (anti)parallel: the great circle is undefined; use lerp
        return torch.lerp(z_a, z_b, t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


class Autoencoder(nn.Module):
    """A standard deterministic autoencoder: reconstruction loss only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config, self._encoder_outputs())
        self.decoder = build_decoder(config)
        self.likelihood = build_likelihood(config.likelihood, sigma=config.sigma)
        self.context = build_context(config.autoregressive, config.data_shape)

    def _encoder_outputs(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- the public API, the same for every model -------------------------------------------

    def encode(self, x: Tensor) -> Posterior:
        """q(z|x) for x (B, C, H, W); `.mean` is the code (mu for a VAE), shape (B, D)."""
        return PointMass(self.encoder(x))

    def decode_logits(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The parameters of p(x|z) for z (B, D): logits (Bernoulli) or means (Gaussian).

        x (B, C, H, W) is the data being scored: an autoregressive decoder reads the pixels
        before each one from it (teacher forcing) and needs it; a factorised one ignores it.
        """
        if self.context is None:
            return self.decoder(z)
        if x is None:
            raise VaelabError("an autoregressive decoder's logits depend on x: pass the data")
        base = self.decoder(z)
        return base + self.context(x, base.flatten(1)).view_as(base)

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) in data space, (B, C, H, W).

        With an autoregressive decoder, each pixel is the mean given the means chosen for the
        pixels before it: one pass per pixel, so decoding is slower than encoding.
        """
        if self.context is None:
            return self.likelihood.mean(self.decoder(z))
        base = self.decoder(z).flatten(1)
        return self.context.generate(base, self.likelihood.mean).view(-1, *self.config.data_shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior's mode: x (B, C, H, W) -> (B, C, H, W)."""
        return self.decode(self.encode(x).mode())

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, z: Tensor | None = None
    ) -> Tensor:
        """Decode n codes drawn from the prior N(0, I) (or the given z): (n, C, H, W)."""
        if z is None:
            z = torch.randn(
                n, self.config.latent_dim, generator=generator, device=self.device, dtype=self.dtype
            )
        return self.decode(z)

    def interpolate(
        self, x_a: Tensor, x_b: Tensor, steps: int = 10, *, spherical: bool = False
    ) -> Tensor:
        """Decode `steps` points on the path between the codes of x_a and x_b (each (C, H, W)).

        Returns (steps, C, H, W); the first and last frames are the two reconstructions.
        """
        z = self.encode(torch.stack([x_a, x_b])).mode()  # (2, D)
        t = torch.linspace(0.0, 1.0, steps, device=z.device, dtype=z.dtype)
        path = slerp(z[0], z[1], t) if spherical else torch.lerp(z[0], z[1], t[:, None])
        return self.decode(path)

    def loss(
        self,
        x: Tensor,
        *,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
        k: int = 1,
        objective: str = "elbo",
    ) -> LossTerms:
        """Reconstruction NLL of x under the decoder: batch mean of per-example sums.

        `k` and `objective` only apply to a VAE; an autoencoder has one code per input.
        """
        recon = self.likelihood.nll(self.decode_logits(self.encoder(x), x), x).mean()
        return LossTerms(total=recon, recon=recon, kl=torch.zeros_like(recon))

    def check_data(self, x: Tensor, *, where: str) -> None:
        """Raise VaelabError when x is not data this model's likelihood can score."""
        if not bool(torch.isfinite(x).all()):
            raise VaelabError(f"{where} contains NaN or infinite values")
        self.likelihood.check_data(x, where=where)

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)


class DenoisingAutoencoder(Autoencoder):
    """Vincent et al. 2008: encode a corrupted input, reconstruct the clean one."""

    def corrupt(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Add Gaussian noise of std `noise_level`, or zero each pixel with that probability."""
        level = self.config.noise_level
        if self.config.noise == "mask":
            keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= level
            return x * keep
        return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def loss(
        self,
        x: Tensor,
        *,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
        k: int = 1,
        objective: str = "elbo",
    ) -> LossTerms:
        x_noisy = self.corrupt(x, generator=generator)
        recon = self.likelihood.nll(self.decode_logits(self.encoder(x_noisy), x), x).mean()
        return LossTerms(total=recon, recon=recon, kl=torch.zeros_like(recon))


class VAE(Autoencoder):
    """Kingma & Welling 2013: a Gaussian encoder, the unit Gaussian prior, beta-weighted KL."""

    def _encoder_outputs(self) -> int:
        return 2 * self.config.latent_dim  # mu and log-variance

    def encode(self, x: Tensor) -> DiagonalGaussian:
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, D) each
        return DiagonalGaussian(mu, logvar)

    def loss(
        self,
        x: Tensor,
        *,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
        k: int = 1,
        objective: str = "elbo",
    ) -> LossTerms:
        """The negative of a lower bound on log p(x), with the KL weighted by beta * kl_scale.

        objective "elbo": the negative ELBO (Kingma & Welling 2013, eq. 10) with the KL in
        closed form, its reconstruction term averaged over `k` reparameterised samples.
        objective "iwae": the negative importance-weighted bound of Burda et al. (2015) with `k`
        samples; at k = 1 it is the ELBO, and the closed-form KL is used then, as for "elbo".
        `recon` and `kl` are always the ELBO's terms; `kl_scale` is the trainer's KL warm-up.
        """
        posterior = self.encode(x)
        kl = posterior.kl().mean()
        weight = self.config.beta * kl_scale
        if k == 1:
            z = posterior.sample(generator=generator)  # (B, D)
            recon = self.likelihood.nll(self.decode_logits(z, x), x).mean()
            return LossTerms(total=recon + weight * kl, recon=recon, kl=kl)
        eps = draw_noise(len(x), k, self.config.latent_dim, like=posterior.mu, generator=generator)
        log_w, log_px_z = log_weights(self, x, posterior, eps, prior_scale=weight)
        recon = -log_px_z.mean()
        if objective == "iwae":
            return LossTerms(total=-log_mean_exp(log_w).mean(), recon=recon, kl=kl)
        return LossTerms(total=recon + weight * kl, recon=recon, kl=kl)


def bits_per_dim(nats_per_example: float, data_shape: tuple[int, int, int]) -> float:
    """Convert nats per example to bits per dimension, to compare data of different sizes."""
    return nats_per_example / (math.prod(data_shape) * math.log(2.0))
