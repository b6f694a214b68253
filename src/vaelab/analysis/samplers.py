"""Where to draw latent codes from: the prior, a mixture fitted to the training codes, a box.

Samplers follow pythae's shape: `fit(codes)` on the training codes (N, D), then
`sample(n, generator=...)` -> (n, D). Codes are drawn on the generator's device (the CPU
without one), in float32; decode them with `vaelab.analysis.latents.decode_codes(model, z)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from vaelab.analysis.latents import encode_dataset
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder


class Sampler(Protocol):
    """Fitted on training codes, draws new codes."""

    needs_codes: bool  # False: fit only reads the latent size, so encoding can be skipped

    def fit(self, codes: Tensor) -> Sampler: ...

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_codes(codes: Tensor, minimum: int) -> None:
    if codes.ndim != 2:
        raise VaelabError(f"codes must be (N, D), got shape {tuple(codes.shape)}")
    if len(codes) < minimum:
        raise VaelabError(f"fitting this sampler needs at least {minimum} codes, got {len(codes)}")


def _check_fitted(value: object, name: str) -> None:
    if value is None:
        raise VaelabError(f"{name} is not fitted: call fit(codes) before sample()")


class PriorSampler:
    """The model's own prior (`model.draw_codes`: N(0, I) for a VAE, a VQ-VAE's PixelCNN), or
    without a model N(0, I); `fit` only reads the latent size D from the codes' shape."""

    needs_codes = False

    def __init__(self, latent_dim: int | None = None, *, model: Autoencoder | None = None) -> None:
        self.latent_dim = latent_dim
        self.model = model

    def fit(self, codes: Tensor) -> PriorSampler:
        _check_codes(codes, 0)
        self.latent_dim = codes.shape[1]
        return self

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        _check_fitted(self.latent_dim, "PriorSampler")
        if self.model is not None:
            with torch.no_grad():
                z = self.model.draw_codes(n, generator=generator)
            return z.to(_device(generator), torch.float32)
        return torch.randn(n, self.latent_dim, generator=generator, device=_device(generator))


class BoxSampler:
    """Uniform in the axis-aligned bounding box of the codes: each dimension between the
    smallest and largest training code, so an autoencoder is probed on its own scale."""

    needs_codes = True

    def __init__(self) -> None:
        self.low: Tensor | None = None  # (D,)
        self.high: Tensor | None = None  # (D,)

    def fit(self, codes: Tensor) -> BoxSampler:
        _check_codes(codes, 1)
        self.low, self.high = codes.min(dim=0).values.float(), codes.max(dim=0).values.float()
        return self

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        _check_fitted(self.low, "BoxSampler")
        device = _device(generator)
        u = torch.rand(n, len(self.low), generator=generator, device=device)  # (n, D)
        return self.low.to(device) + u * (self.high - self.low).to(device)


class GaussianMixtureSampler:
    """A Gaussian mixture with full covariances fitted to the codes by EM (scikit-learn,
    k-means initialisation seeded by `seed`): a stand-in prior for models without one, as in
    Ghosh et al. 2020 ("From variational to deterministic autoencoders", ex-post density).

    Sampling is done here in torch, so it depends only on the generator passed to `sample`.
    """

    needs_codes = True

    def __init__(self, components: int = 10, *, seed: int = 0) -> None:
        if components < 1:
            raise VaelabError(f"a Gaussian mixture needs at least 1 component, got {components}")
        self.components = components
        self.seed = seed
        self.weights: Tensor | None = None  # (K,)
        self.means: Tensor | None = None  # (K, D)
        self.covariances: Tensor | None = None  # (K, D, D)

    def fit(self, codes: Tensor) -> GaussianMixtureSampler:
        from sklearn.mixture import GaussianMixture  # slow import, only when used

        _check_codes(codes, 2)
        mixture = GaussianMixture(
            n_components=min(self.components, len(codes)),
            covariance_type="full",
            reg_covar=1e-6,  # keeps each covariance invertible when codes collapse onto a line
            random_state=self.seed,
        )
        mixture.fit(codes.double().numpy())
        self.weights = torch.from_numpy(mixture.weights_)
        self.means = torch.from_numpy(mixture.means_)
        self.covariances = torch.from_numpy(mixture.covariances_)
        return self

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """n codes (n, D): a component by its weight, then its Gaussian with the spread around
        its mean scaled by `temperature` (below 1: more typical codes)."""
        _check_fitted(self.weights, "GaussianMixtureSampler")
        device = _device(generator)
        weights = self.weights.to(device)
        k = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        cholesky = torch.linalg.cholesky(self.covariances).to(device)  # (K, D, D)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, device=device).double()
        z = self.means.to(device)[k] + temperature * (cholesky[k] @ eps).squeeze(-1)  # (n, D)
        return z.float()


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "prior": lambda *, seed=0, model=None: PriorSampler(model=model),
    "gmm": lambda *, seed=0, model=None: GaussianMixtureSampler(seed=seed),
}


def make_sampler(name: str, *, seed: int = 0, model: Autoencoder | None = None) -> Sampler:
    """An unfitted sampler from the registry: "prior" (the prior of `model`, else N(0, I))
    or "gmm"."""
    if name not in SAMPLERS:
        raise VaelabError(f"unknown sampler '{name}': use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed=seed, model=model)


def fit_sampler(
    name: str, model: Autoencoder, train_x: Tensor | None = None, *, seed: int = 0
) -> Sampler:
    """The sampler `name`, fitted to the codes of `train_x` (N, C, H, W) under `model`.

    The prior needs no codes, so `train_x` may then be None and nothing is encoded.
    """
    sampler = make_sampler(name, seed=seed, model=model)
    if not sampler.needs_codes:
        return sampler.fit(torch.zeros(0, model.config.latent_dim))
    if train_x is None or len(train_x) == 0:
        raise VaelabError(f"the {name} sampler is fitted to training codes: pass training images")
    return sampler.fit(encode_dataset(model, train_x))
