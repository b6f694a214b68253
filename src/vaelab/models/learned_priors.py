"""Learned priors p(z): a mixture of Gaussians, and the VampPrior (Tomczak & Welling 2018).

Neither has a closed-form KL to a Gaussian posterior, so the bound estimates it by Monte
Carlo, log q(z|x) - log p(z) at the sampled z (see `Prior.kl`). `build_prior` picks the prior
a ModelConfig names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian, at_least_float32
from vaelab.models.priors import Prior, StandardNormalPrior

PSEUDO_INPUT_MEAN = 0.05  # Tomczak & Welling's initialisation of the pseudo-inputs
PSEUDO_INPUT_STD = 0.01


def mixture_log_prob(z: Tensor, mu: Tensor, logvar: Tensor, log_mix: Tensor) -> Tensor:
    """log sum_k pi_k N(z; mu_k, diag(exp(logvar_k))): z (..., B, D), mu and logvar (K, D),
    log_mix (K,) the log mixing weights -> (..., B), in the dtype of z (float32 or wider).

    The squared distances are expanded into matrix products, z^2 . p - 2 z . (mu p) +
    mu^2 . p with p the precisions, so that no (N, K, D) tensor is formed (N = 5000 samples of
    an image against K = 500 components in `vaelab eval`); they are computed in float64, since
    the expansion cancels: in float32 a component of log-variance -8 would be off by 0.1 nats."""
    (z,) = at_least_float32(z)
    flat, mu, logvar = z.reshape(-1, z.shape[-1]).double(), mu.double(), logvar.double()
    precision = torch.exp(-logvar)  # (K, D)
    quadratic = (
        flat.pow(2) @ precision.T
        - 2.0 * flat @ (mu * precision).T
        + (mu.pow(2) * precision).sum(-1)
    ).clamp_min(0.0)  # (N, K)
    log_norm = -0.5 * (z.shape[-1] * math.log(2.0 * math.pi) + logvar.sum(-1))  # (K,)
    log_components = log_mix.double() + log_norm - 0.5 * quadratic
    return torch.logsumexp(log_components, dim=-1).to(z.dtype).view(z.shape[:-1])


class MixtureOfGaussiansPrior(Prior):
    """p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)), every parameter learned. The means start
    spread as N(0, I) draws, the variances at 1 and the weights equal."""

    title = "a learned mixture of Gaussians"

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__(latent_dim)
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def describe(self) -> str:
        return f"a learned mixture of {len(self.logits)} Gaussians"

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        return mixture_log_prob(z, self.means, self.logvars, F.log_softmax(self.logits, dim=0))

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        weights = F.softmax(self.logits.detach().float(), dim=0).to(device or "cpu")
        which = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)
        mu = self.means.detach()[which.to(self.means.device)].to(eps)
        std = torch.exp(0.5 * self.logvars.detach()[which.to(self.means.device)]).to(eps)
        return mu + std * eps


Encode = Callable[[Tensor], DiagonalGaussian]


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z|u_k): the mixture of the model's own posteriors at K learned
    pseudo-inputs u_k (Tomczak & Welling 2018, eq. 9). The pseudo-inputs are image-shaped
    parameters, kept in [0, 1] by a hardtanh for data in [0, 1] (the paper's), started at
    N(0.05, 0.01).

    `encode` maps images to the Gaussian q(z|x) the mixture is made of (the encoder's, before
    any flow); the model sets it with `attach`. Outside autograd (evaluation, sampling) the
    mixture's components are computed once and kept until a parameter changes (an optimiser
    step, `load_state_dict`, a move to another device or dtype) or autocast is switched;
    writing into `p.data` directly bypasses that check.
    """

    title = "a VampPrior"

    def __init__(
        self, latent_dim: int, pseudo_inputs: int, data_shape: tuple[int, ...], *, unit_range: bool
    ) -> None:
        super().__init__(latent_dim)
        init = torch.randn(pseudo_inputs, *data_shape) * PSEUDO_INPUT_STD + PSEUDO_INPUT_MEAN
        self.pseudo_inputs = nn.Parameter(init)
        self.unit_range = unit_range
        self._encode: Encode | None = None
        self._owner: nn.Module | None = None
        self._cache: tuple[tuple[object, ...], DiagonalGaussian] | None = None

    def describe(self) -> str:
        return f"a VampPrior of {len(self.pseudo_inputs)} pseudo-inputs"

    def attach(self, encode: Encode, owner: nn.Module) -> None:
        """Use `encode` for the mixture's components; `owner` is the module whose parameters
        they depend on (the model). Neither is registered as a submodule."""
        object.__setattr__(self, "_encode", encode)
        object.__setattr__(self, "_owner", owner)

    def inputs(self) -> Tensor:
        """The pseudo-inputs as images: (K, C, H, W)."""
        return F.hardtanh(self.pseudo_inputs, 0.0, 1.0) if self.unit_range else self.pseudo_inputs

    def components(self) -> DiagonalGaussian:
        """q(z|u_k) for every pseudo-input: (K, D)."""
        if self._encode is None or self._owner is None:
            raise RuntimeError("VampPrior.attach was not called")
        if torch.is_grad_enabled():
            return self._encode(self.inputs())
        params = list(self._owner.parameters())
        autocast = torch.is_autocast_enabled(params[0].device.type)
        key = (autocast, *((p.data_ptr(), p._version, p.dtype) for p in params))
        if self._cache is None or self._cache[0] != key:
            object.__setattr__(self, "_cache", (key, self._encode(self.inputs())))
        assert self._cache is not None
        return self._cache[1]

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        mixture = self.components()
        log_mix = torch.full((len(mixture),), -math.log(len(mixture)), device=z.device)
        return mixture_log_prob(z, mixture.mu, mixture.logvar, log_mix)

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        with torch.no_grad():
            mixture = self.components()
        count = len(mixture)
        which = torch.randint(count, (n,), generator=generator, device=device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)
        chosen = which.to(mixture.mu.device)
        return mixture.mu[chosen].to(eps) + mixture.std[chosen].to(eps) * eps


def build_prior(config: ModelConfig, latent_dim: int | None = None) -> Prior:
    """The prior `config.prior` names over `latent_dim` dimensions (default: the config's).
    A VampPrior still needs `attach` before use."""
    dim = config.latent_dim if latent_dim is None else latent_dim
    if config.prior == "mog":
        return MixtureOfGaussiansPrior(dim, config.components)
    if config.prior == "vamp":
        return VampPrior(
            dim,
            config.pseudo_inputs,
            config.data_shape,
            unit_range=config.likelihood == "bernoulli",
        )
    return StandardNormalPrior(dim)


__all__ = ["MixtureOfGaussiansPrior", "VampPrior", "build_prior", "mixture_log_prob"]
