"""Where the explorer's samples come from, and at what temperature.

- `normal`: the run's prior is N(0, I) (a VAE's): z = T * eps, eps ~ N(0, I).
- `mixture`: an autoencoder has no prior, so its samples come from a Gaussian mixture fitted to
  its codes, as in ex-post density estimation (Ghosh et al. 2020, "From variational to
  deterministic autoencoders", who fit 10 full-covariance components): pick a component k by its
  weight, then z = mu_k + T * L_k eps with L_k the Cholesky factor of its covariance.
- `prior`: any other prior (learned, conditional, a VQ-VAE's PixelCNN), drawn by the model at
  temperature 1 only.

The temperature T scales the spread around the prior's (or component's) centre: T < 1 draws
typical codes (cleaner, less varied images), T > 1 the tails.
"""

from __future__ import annotations

import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from vaelab.analysis.samplers import GaussianMixtureSampler
from vaelab.models import Autoencoder

MIXTURE_COMPONENTS = 10  # Ghosh et al.'s choice for MNIST and CIFAR
MAX_FIT_CODES = 10_000  # a fixed subsample of more codes keeps the fit to about a second
MIXTURE_SEED = 0


def fit_code_mixture(codes: torch.Tensor) -> GaussianMixtureSampler | None:
    """`vaelab compare`'s mixture sampler, of up to MIXTURE_COMPONENTS full-covariance
    Gaussians, fitted to codes (N, D); None when there are too few codes (fewer than 2 per
    dimension and component)."""
    n, d = codes.shape
    components = min(MIXTURE_COMPONENTS, n // max(2 * d, 1))
    if components < 1:
        return None
    generator = torch.Generator().manual_seed(MIXTURE_SEED)
    chosen = torch.randperm(n, generator=generator)[:MAX_FIT_CODES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a usable fit either way
        return GaussianMixtureSampler(components, seed=MIXTURE_SEED).fit(codes[chosen])


def sampler_of(model: Autoencoder, mixture: GaussianMixtureSampler | None) -> str:
    """How the run's samples are drawn: 'normal', 'mixture' or 'prior' (see the module). An
    autoencoder with too few codes for a mixture draws from N(0, I), as `vaelab sample` does."""
    if model.needs_labels:
        return "prior"
    if not model.has_prior:
        return "mixture" if mixture is not None else "normal"
    return "normal" if model.gaussian_prior else "prior"


def draw_codes(
    model: Autoencoder,
    mixture: GaussianMixtureSampler | None,
    n: int,
    *,
    y: torch.Tensor | None,
    generator: torch.Generator,
    temperature: float,
) -> torch.Tensor:
    """n codes (n, D) float32 on the CPU to decode as the run's samples (see the module).
    Raises ValueError for a temperature other than 1 where the prior does not take one."""
    sampler = sampler_of(model, mixture)
    if sampler == "mixture":
        assert mixture is not None
        return mixture.sample(n, generator=generator, temperature=temperature).cpu()
    if sampler == "prior" and temperature != 1.0:
        raise ValueError(
            "this run's prior is drawn at temperature 1 only: a temperature applies to an "
            "N(0, I) prior and to an autoencoder's mixture"
        )
    with torch.no_grad():
        z = model.draw_codes(n, y=y, generator=generator).cpu().float()  # (n, D)
    return z * temperature if sampler == "normal" else z
