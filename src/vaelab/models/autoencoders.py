"""The shared model API, and the deterministic models: a standard and a denoising autoencoder.

Every model maps x (B, C, H, W) to a posterior over z (B, D) with `encode`, and z back to data
space with `decode`. `loss` returns `LossTerms`, per the project's convention: summed over pixels
and latent dimensions per example, averaged over the batch, in nats per example. Every method
takes an optional condition y (B,) or (B, ...): unconditional models ignore it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.autoregressive import build_context
from vaelab.models.bounds import ImportanceTerms
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import PointMass, Posterior
from vaelab.models.likelihoods import build_likelihood
from vaelab.models.networks import build_decoder, build_encoder
from vaelab.models.priors import Prior, StandardNormalPrior


@dataclass(frozen=True)
class LossTerms:
    """Batch means, in nats per example. `total = recon + beta * kl_scale * kl` for a VAE.

    `auxiliary` is the loss of networks that serve the objective without being part of the
    model's bound (FactorVAE's discriminator): minimised alongside `total`, its gradients reach
    only those networks, and `total` sends none to them. None for most models.
    """

    total: Tensor
    recon: Tensor
    kl: Tensor
    auxiliary: Tensor | None = None

    @property
    def objective(self) -> Tensor:
        """What one optimisation step minimises: `total`, plus `auxiliary` where there is one."""
        return self.total if self.auxiliary is None else self.total + self.auxiliary


def slerp(z_a: Tensor, z_b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for latent spaces). z: (D,), t: (T,)."""
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:  # (anti)parallel: the great circle is undefined; use lerp
        return torch.lerp(z_a, z_b, t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


class Autoencoder(nn.Module):
    """A standard deterministic autoencoder (reconstruction loss only), and the API that every
    model shares."""

    has_prior: ClassVar[bool] = False  # whether it has a prior p(z), its samples' source
    title: ClassVar[str] = "Autoencoder"  # how figures name the kind of model
    # whether q(z|x) is a distribution to sample (a VAE's), not a point (an AE's, a VQ-VAE's)
    stochastic_encoder: ClassVar[bool] = False
    # whether its prior is fitted after training, by `vaelab train-prior` (a VQ-VAE's)
    prior_fitted_after_training: ClassVar[bool] = False
    # whether its objective needs the number of training examples (`config.dataset_size`)
    needs_dataset_size: ClassVar[bool] = False
    # whether it is conditional on a class label y (a cvae's, an m2's): the data's labels
    # reach its loss, and `config.classes` comes from the data
    conditional: ClassVar[bool] = False
    # whether it classifies images itself, q(y|x) with `predict_proba` (an m2), and so infers
    # a label it is not given
    classifies: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder = self._networks()
        self.likelihood = build_likelihood(config.likelihood, sigma=config.sigma)
        self.context = build_context(
            config.autoregressive, config.data_shape, layers=config.ar_layers
        )
        self.prior: Prior | None = None  # latent-variable models set theirs

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        """The encoder and the decoder, of the configured architecture."""
        return build_encoder(self.config, self._encoder_outputs()), build_decoder(self.config)

    def _encoder_outputs(self) -> int:
        return self.config.latent_dim

    @property
    def needs_labels(self) -> bool:
        """Whether its condition is a class label y that training and evaluation must pass
        (a cvae's unless it conditions on observed quadrants; an m2's)."""
        return False

    @property
    def gaussian_prior(self) -> bool:
        """Whether its prior is N(0, I), whose quantiles the manifold figure can decode and
        which NumPy draws in one line (a VAE's)."""
        return isinstance(self.prior, StandardNormalPrior)

    @property
    def awaiting_prior(self) -> bool:
        """Whether its prior is still the placeholder of training, to be fitted by `vaelab
        train-prior` (a VQ-VAE's uniform prior), so that its samples are not yet meaningful."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- the public API, the same for every model -------------------------------------------

    def check_images(self, x: Tensor) -> None:
        """A one-line VaelabError unless x is a batch (B, C, H, W) of this model's images."""
        if tuple(x.shape[1:]) != tuple(self.config.data_shape) or x.dim() != 4:
            raise VaelabError(
                f"x has shape {tuple(x.shape)}, but this model takes batches of images of shape "
                f"(B, {', '.join(map(str, self.config.data_shape))})"
            )

    def check_codes(self, z: Tensor) -> None:
        """A one-line VaelabError unless z holds codes of this model's latent size, (..., D)."""
        if z.dim() < 2 or z.shape[-1] != self.config.latent_dim:
            raise VaelabError(
                f"z has shape {tuple(z.shape)}, but this model's codes are "
                f"(B, {self.config.latent_dim})"
            )

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """q(z|x) for x (B, C, H, W); `.mean` is the code (mu for a VAE), shape (B, D)."""
        self.check_images(x)
        return PointMass(self.encoder(x))

    def decode_params(self, z: Tensor, x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """The parameters of p(x|z): logits (Bernoulli) or means (Gaussian).

        z (B, D) or (K, B, D) gives (B, C, H, W) or (K, B, C, H, W). x (B, C, H, W) is the data
        being scored: an autoregressive decoder reads the pixels before each one from it
        (teacher forcing, once per image for all K samples); a factorised one ignores it.
        """
        self.check_codes(z)
        base = self.decoder(z.reshape(-1, z.shape[-1])).view(*z.shape[:-1], *self.config.data_shape)
        if self.context is None:
            return base
        if x is None:
            raise VaelabError("an autoregressive decoder's output depends on x: pass the data")
        return base + self.context(x, base)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|z) in data space: z (B, D) -> (B, C, H, W).

        With an autoregressive decoder, each pixel is the mean given the means chosen for the
        pixels before it: one pass per pixel, so decoding is slower than encoding.
        """
        self.check_codes(z)
        if self.context is None:
            return self.likelihood.mean(self.decoder(z))
        base = self.decoder(z).flatten(1)
        return self.context.generate(base, self.likelihood.mean).view(-1, *self.config.data_shape)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior's mode: x (B, C, H, W) -> (B, C, H, W)."""
        return self.decode(self.encode(x, y).mode(), y)

    def draw_codes(
        self, n: int, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n codes to decode as samples, (n, D): from the prior, or N(0, I) for a model
        without one (whose decodings then need not look like data). The randomness comes from
        `generator` (on any device: a CPU generator serves a model on a GPU); the codes are on
        the model's device."""
        drawn_on = generator.device if generator is not None else self.device
        if self.has_prior:
            z = self.require_prior().sample(
                n,
                y=self.prior_condition(None, y),
                generator=generator,
                device=drawn_on,
                dtype=self.dtype,
            )
        else:
            shape = (n, self.config.latent_dim)
            z = torch.randn(shape, generator=generator, device=drawn_on, dtype=self.dtype)
        return z.to(self.device)

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        z: Tensor | None = None,
    ) -> Tensor:
        """Decode n codes drawn by `draw_codes` (or the given z): (n, C, H, W)."""
        if z is None:
            z = self.draw_codes(n, y=y, generator=generator)
        return self.decode(z, y)

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
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """Reconstruction NLL of x under the decoder: batch mean of per-example sums."""
        code = self.encode(x, y).mode()
        recon = self.likelihood.nll(self.decode_params(code, x, y), x).mean()
        return LossTerms(total=recon, recon=recon, kl=torch.zeros_like(recon))

    # --- the bound, for models with a prior -----------------------------------------------------

    def require_prior(self) -> Prior:
        """The model's prior; a one-line VaelabError for a model without one."""
        if self.prior is None:
            raise VaelabError(
                f"a {self.config.model} has no prior or posterior to sample: it has no "
                "likelihood bound"
            )
        return self.prior

    def prior_condition(self, x: Tensor | None, y: Tensor | None) -> Tensor | None:
        """What the prior is conditioned on, given the data x and the condition y: y itself,
        which an unconditional prior ignores (a conditional model's condition vector)."""
        return y

    @property
    def scored_values(self) -> int:
        """How many values of an image `log_likelihood` scores: all C * H * W here."""
        return math.prod(self.config.data_shape)

    def log_likelihood(self, x_params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) of the values the model scores (all of them, but for a model that
        completes images: the unobserved part), per example: (..., B)."""
        return self.likelihood.log_prob(x_params, x)

    def importance_terms(
        self,
        x: Tensor,
        z: Tensor,
        posterior: Posterior,
        *,
        y: Tensor | None = None,
        log_qz: Tensor | None = None,
    ) -> ImportanceTerms:
        """log p(x|z), log p(z) and log q(z|x) at the codes z (K, B, D) of x (B, C, H, W).

        `log_qz` (K, B) is log q(z|x) where the caller has it from the draw
        (`rsample_with_log_prob`; a flow posterior's density is known there only)."""
        prior = self.require_prior()
        return ImportanceTerms(
            log_px_z=self.log_likelihood(self.decode_params(z, x, y), x),
            log_pz=prior.log_prob(z, y=self.prior_condition(x, y)),
            log_qz=posterior.log_prob(z) if log_qz is None else log_qz,
        )

    def log_weights(
        self,
        x: Tensor,
        k: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Log importance weights log p(x, z_k) / q(z_k|x) of k samples z_k ~ q(z|x): (K, B).

        `log_mean_exp(log_weights(x, k))` is Burda et al.'s (2015) bound on log p(x).
        """
        self.require_prior()
        posterior = self.encode(x, y)
        z, log_qz = posterior.rsample_with_log_prob(k=k, generator=generator)
        return self.importance_terms(x, z, posterior, y=y, log_qz=log_qz).log_weights()

    def kl(
        self,
        posterior: Posterior,
        z: Tensor,
        *,
        y: Tensor | None = None,
        log_qz: Tensor | None = None,
    ) -> Tensor:
        """KL(q(z|x) || p(z)) per example, (B,): in closed form where the prior has one, else
        the Monte Carlo estimate log q(z|x) - log p(z) at the sampled codes z, (B, D) or
        (K, B, D), averaged over the K samples. `y` is the prior's condition
        (`prior_condition`); `log_qz` is log q(z|x) at z where the draw gave it."""
        prior = self.require_prior()
        closed = prior.kl(posterior, y=y)
        if closed is not None:
            return closed
        if log_qz is None:
            log_qz = posterior.log_prob(z)
        log_ratio = log_qz - prior.log_prob(z, y=y)
        return log_ratio if z.dim() == 2 else log_ratio.mean(dim=0)

    @property
    def top_layer_dim(self) -> int:
        """How many of a code's last values are its top stochastic layer (a hierarchy's z_L),
        the ones the traversals move: all D here."""
        return self.config.latent_dim

    def codes_from_top(self, z_top: Tensor) -> Tensor:
        """Whole codes (..., D) from top-layer values (..., top_layer_dim): the layers below at
        their conditional means for a hierarchy; the values themselves here."""
        return z_top

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: one, of every parameter, by default. A group with
        `"fixed_lr": True` keeps its own learning rate through the run's schedule (FactorVAE's
        discriminator, trained with the settings of its paper)."""
        return [{"params": list(self.parameters())}]

    def measures(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Model-specific measures of the data x (N, C, H, W) with its labels y (where the
        data has them), logged each epoch and by `vaelab eval` (a VQ-VAE's codebook usage, an
        M2's accuracy); none by default."""
        return {}

    def check_data(self, x: Tensor, *, where: str) -> None:
        """Raise VaelabError when x is not data this model's likelihood can score."""
        if not bool(torch.isfinite(x).all()):
            raise VaelabError(f"{where} contains NaN or infinite values")
        self.likelihood.check_data(x, where=where)

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)


class DenoisingAutoencoder(Autoencoder):
    """Vincent et al. 2008: encode a corrupted input, reconstruct the clean one."""

    title = "Denoising autoencoder"

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
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        code = self.encode(self.corrupt(x, generator=generator), y).mode()
        recon = self.likelihood.nll(self.decode_params(code, x, y), x).mean()
        return LossTerms(total=recon, recon=recon, kl=torch.zeros_like(recon))


def bits_per_dim(nats_per_example: float, data_shape: tuple[int, int, int]) -> float:
    """Convert nats per example to bits per dimension, to compare data of different sizes."""
    return nats_per_example / (math.prod(data_shape) * math.log(2.0))
