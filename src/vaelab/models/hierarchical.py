"""VAEs with a hierarchy of stochastic layers z_1 (next to x), ..., z_L (the top).

Both models share the generative model p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1)
(Burda et al. 2015, sec. 5; Sønderby et al. 2016, eq. 1-3) and differ in q(z|x):
- "hvae" infers bottom-up, q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1}) (Burda et al. 2015, sec. 5);
- "ladder" infers top-down (Sønderby et al. 2016, eq. 17-20): a deterministic bottom-up pass
  gives each layer a Gaussian (mu_hat_l, var_hat_l); q(z_L|x) is the top one, and each lower
  q(z_l | z_{l+1}, x) weighs it against the generative p(z_l | z_{l+1}) by precision.

A code z is the layers' values side by side, (B, D_1 + ... + D_L), z_1 first: the shared API
(decode, draw_codes, the bounds, the figures) takes it as any VAE's code, and p(x|z) reads z_1.
The networks between x and z_1 are the configured ones (`hidden_dims`, mlp or conv); those
between stochastic layers are MLPs half as wide: Burda et al.'s 784-200-200-100-100-50 model
with `--hidden-dims 200 200 --latent-dims 100,50 --activation tanh`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property, partial
from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor, nn

from vaelab.models.autoencoders import Autoencoder, LossTerms
from vaelab.models.bounds import log_mean_exp
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian, at_least_float32, gaussian_log_density
from vaelab.models.learned_priors import VampPrior, build_prior
from vaelab.models.networks import _mlp, build_decoder, build_encoder
from vaelab.models.priors import Prior

Gaussian = tuple[Tensor, Tensor]  # (mu, logvar) of one layer, (..., B, D_l) each
ConditionalGaussian = Callable[[Tensor], Gaussian]  # a parent layer's values -> a layer's Gaussian

MEASURE_SAMPLES = 8  # posterior draws per image of the per-layer KL estimate
MEASURE_BATCH = 500  # images encoded at once by `measures`
MEASURE_SEED = 0  # the per-layer KL's draws are the same at every call
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2015): unit u is active when Cov_x(E_q[z_u]) > 0.01


def split_layers(z: Tensor, dims: Sequence[int]) -> list[Tensor]:
    """A code (..., D_1 + ... + D_L) as its layers' values, [(..., D_1), ..., (..., D_L)]."""
    return list(z.split(list(dims), dim=-1))


def gaussian_head(net: nn.Module, h: Tensor) -> Gaussian:
    """A diagonal Gaussian from a network whose outputs are (mu, logvar) side by side; float32
    or wider under bfloat16 autocast."""
    mu, logvar = net(h).chunk(2, dim=-1)
    return at_least_float32(mu, logvar)  # type: ignore[return-value]


def precision_weighted(bottom_up: Gaussian, top_down: Gaussian) -> Gaussian:
    """Sønderby et al. 2016, eq. 18-19: var_q = 1 / (var_hat^-1 + var_p^-1) and
    mu_q = (mu_hat var_hat^-1 + mu_p var_p^-1) var_q. In log-variances, stably:
    logvar_q = -logaddexp(-logvar_hat, -logvar_p), and mu_q = mu_p + w (mu_hat - mu_p) with
    w = sigmoid(logvar_p - logvar_hat), the bottom-up share of the precision."""
    (mu_hat, logvar_hat), (mu_p, logvar_p) = bottom_up, top_down
    share = torch.sigmoid(logvar_p - logvar_hat)
    return mu_p + share * (mu_hat - mu_p), -torch.logaddexp(-logvar_hat, -logvar_p)


class HierarchicalPrior(Prior):
    """p(z) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) over whole codes (..., B, D): any Prior on the
    top layer (N(0, I), a VampPrior, a mixture), and below it diagonal Gaussians whose mean and
    log-variance an MLP computes from the layer above. No closed-form KL (`kl_per_dim` is
    None): the bound estimates it by Monte Carlo."""

    title = "a hierarchical prior"

    def __init__(self, dims: Sequence[int], top: Prior, conditionals: nn.ModuleList) -> None:
        super().__init__(sum(dims))
        self.dims = tuple(dims)
        self.top = top
        self.conditionals = conditionals  # [l]: z_{l+2} -> p(z_{l+1} | z_{l+2}), 0-based l

    def describe(self) -> str:
        return f"{self.top.describe()} on z_{len(self.dims)}, Gaussian p(z_l | z_l+1) below"

    def conditional(self, layer: int, parent: Tensor) -> Gaussian:
        """p(z_l | z_{l+1}) for l = layer + 1 (layers counted from 0 here, z_1 the 0th), given
        the values of the layer above (..., B, D_{l+1})."""
        return gaussian_head(self.conditionals[layer], parent)

    def layer_log_probs(self, z: Tensor) -> list[Tensor]:
        """log p(z_l | z_{l+1}) for l < L, then log p(z_L), at z (..., B, D): each (..., B)."""
        layers = split_layers(z, self.dims)
        below = [
            gaussian_log_density(layers[i], *self.conditional(i, layers[i + 1])).sum(dim=-1)
            for i in range(len(self.dims) - 1)
        ]
        return [*below, self.top.log_prob(layers[-1])]

    def log_prob(self, z: Tensor, *, y: Tensor | None = None) -> Tensor:
        return sum(self.layer_log_probs(z))  # type: ignore[return-value]

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Ancestrally: z_L ~ p(z_L), then each z_l ~ p(z_l | z_{l+1}) down to z_1: (n, D)."""
        weight = next(self.conditionals.parameters())
        with torch.no_grad():
            layers = [self.top.sample(n, generator=generator, device=device, dtype=dtype)]
            for layer in reversed(range(len(self.dims) - 1)):
                mu, logvar = self.conditional(layer, layers[0].to(weight))
                eps = torch.randn(mu.shape, generator=generator, device=device, dtype=dtype)
                layers.insert(0, mu.to(eps) + torch.exp(0.5 * logvar).to(eps) * eps)
        return torch.cat(layers, dim=-1)

    def lower_means(self, z_top: Tensor) -> Tensor:
        """Whole codes (..., D) from top-layer values (..., D_L): each lower layer at the mean
        of p(z_l | z_{l+1}), z_{l+1} at its own such mean (what the traversals decode)."""
        layers = [z_top]
        for layer in reversed(range(len(self.dims) - 1)):
            layers.insert(0, self.conditional(layer, layers[0])[0].to(z_top.dtype))
        return torch.cat(layers, dim=-1)


class HierarchicalPosterior:
    """q(z|x) as a chain of diagonal Gaussians, one per layer, sampled ancestrally: bottom-up
    (z_1 first, each layer's parent the one below) or top-down (z_L first, the one above).

    Layer l's Gaussian given its parent's values: `evidence[l]` (mu, logvar) (B, D_l) alone
    where `nets[l]` is None (the chain's first layer); `nets[l](parent)` alone where the
    evidence is None (hvae: q(z_l | z_{l-1})); both, weighted by precision, where both are
    given (ladder: the bottom-up Gaussian and the generative p(z_l | z_{l+1})). Densities are
    float32 or wider. Not a DiagonalGaussian: no closed-form KL applies to it.
    """

    def __init__(
        self,
        dims: Sequence[int],
        evidence: Sequence[Gaussian | None],
        nets: Sequence[ConditionalGaussian | None],
        *,
        top_down: bool,
    ) -> None:
        self.dims, self.evidence, self.nets = tuple(dims), list(evidence), list(nets)
        self.top_down = top_down
        layers = range(len(self.dims))
        self.order = list(reversed(layers) if top_down else layers)  # the sampling order

    def _gaussian(self, layer: int, values: Sequence[Tensor | None]) -> Gaussian:
        """The layer's Gaussian, its parent at `values[parent]` (the chain's first: none)."""
        net, evidence = self.nets[layer], self.evidence[layer]
        if net is None:
            assert evidence is not None
            return evidence
        parent = values[layer + 1 if self.top_down else layer - 1]
        assert parent is not None
        conditional = net(parent)
        return conditional if evidence is None else precision_weighted(evidence, conditional)

    @cached_property
    def ancestral(self) -> list[Gaussian]:
        """Each layer's Gaussian with its parent at the parent's ancestral mean, z_1's first."""
        means: list[Tensor | None] = [None] * len(self.dims)
        gaussians: list[Gaussian] = [None] * len(self.dims)  # type: ignore[list-item]
        for layer in self.order:
            gaussians[layer] = self._gaussian(layer, means)
            means[layer] = gaussians[layer][0]
        return gaussians

    @property
    def mean(self) -> Tensor:
        """The ancestral means, (B, D): down the sampling order, each layer's mean given its
        parent at the parent's ancestral mean (hvae: mu_1(x), then mu_2(mu_1), ...; ladder:
        mu_hat_L(x), then the precision-weighted mean of z_{L-1} given that, ...). This is
        E_q[z_l] for the chain's first layer only; the code one pass of the networks gives."""
        return torch.cat([mu for mu, _ in self.ancestral], dim=-1)

    def mode(self) -> Tensor:
        """The ancestral means (see `mean`)."""
        return self.mean

    def __len__(self) -> int:
        return len(next(e for e in self.evidence if e is not None)[0])

    def __getitem__(self, index: slice | Tensor) -> HierarchicalPosterior:
        """The posteriors of some examples of the batch."""
        evidence = [None if e is None else (e[0][index], e[1][index]) for e in self.evidence]
        return HierarchicalPosterior(self.dims, evidence, self.nets, top_down=self.top_down)

    def layer_log_probs(self, z: Tensor) -> list[Tensor]:
        """log q(z_l | parent, x) of each layer at z (..., B, D), z_1's first: each (..., B)."""
        values = split_layers(z, self.dims)
        return [
            gaussian_log_density(values[i], *self._gaussian(i, values)).sum(dim=-1)
            for i in range(len(self.dims))
        ]

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) at any z (..., B, D): the layers' conditionals, each at z's own parent
        values; (..., B)."""
        return sum(self.layer_log_probs(z))  # type: ignore[return-value]

    def rsample_with_log_prob(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Ancestral reparameterised draws z_l = mu_l + sigma_l * eps_l in the sampling order,
        and log q(z|x) there: (B, D) and (B,), or (K, B, D) and (K, B) when `k` is given."""
        values: list[Tensor | None] = [None] * len(self.dims)
        log_q: Tensor | float = 0.0
        for layer in self.order:
            mu, logvar = self._gaussian(layer, values)
            first = layer == self.order[0]
            shape = (k, *mu.shape) if first and k is not None else mu.shape
            eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
            values[layer] = mu + torch.exp(0.5 * logvar) * eps
            log_q = log_q + gaussian_log_density(values[layer], mu, logvar).sum(dim=-1)
        return torch.cat(values, dim=-1), log_q  # type: ignore[arg-type,return-value]

    def rsample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral reparameterised draws: (B, D), or (K, B, D) when `k` is given."""
        return self.rsample_with_log_prob(k=k, generator=generator)[0]

    def sample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """As `rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(k=k, generator=generator)


class FirstLayerDecoder(nn.Module):
    """p(x|z_1)'s network, given whole codes (..., D): it reads z_1, their first D_1 values, so
    that decoding, an autoregressive decoder's context and the ONNX decoder take codes as
    they come."""

    def __init__(self, net: nn.Module, first_dim: int) -> None:
        super().__init__()
        self.net, self.first_dim = net, first_dim

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[..., : self.first_dim])


def _layer_config(config: ModelConfig, latent_dim: int) -> ModelConfig:
    """The config of the networks between x and a layer of `latent_dim` units: a one-layer
    model's (whose latent_dim is its own, not the hierarchy's sum)."""
    return replace(config, model="vae", latent_dims=None, latent_dim=latent_dim)


class HierarchicalVAE(Autoencoder):
    """Burda et al.'s (2015, sec. 5) VAE of several stochastic layers, inferred bottom-up:
    q(z_1|x) from the configured encoder, q(z_{l+1} | z_l) from MLPs on z_l's values."""

    has_prior = True
    stochastic_encoder = True
    title = "Hierarchical VAE"
    top_down: ClassVar[bool] = False  # the sampling order of q (see HierarchicalPosterior)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dims, act = config.latent_dims, config.activation
        assert dims is not None  # ModelConfig settles a hierarchy's sizes
        upper = [max(1, h // 2) for h in config.hidden_dims]  # Burda et al.: 200-200, 100-100
        # bottom-up stage l -> l+1: from z_l's values (hvae), or (mu_hat_l, logvar_hat_l) (ladder)
        width = 2 if self.top_down else 1
        self.upward = nn.ModuleList(
            _mlp([width * d_in, *upper, 2 * d_out], act) for d_in, d_out in pairwise(dims)
        )
        conditionals = nn.ModuleList(
            _mlp([d_in, *upper, 2 * d_out], act) for d_out, d_in in pairwise(dims)
        )
        self.prior = HierarchicalPrior(dims, build_prior(config, dims[-1]), conditionals)
        if isinstance(self.prior.top, VampPrior):
            self.prior.top.attach(self.top_gaussian, self)

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        assert self.config.latent_dims is not None
        first_dim = self.config.latent_dims[0]
        first = _layer_config(self.config, first_dim)
        decoder = FirstLayerDecoder(build_decoder(first), first_dim)  # p(x|z_1)
        return build_encoder(first, 2 * first_dim), decoder  # the encoder: q(z_1|x)'s network

    def encode(self, x: Tensor, y: Tensor | None = None) -> HierarchicalPosterior:
        """q(z|x) for x (B, C, H, W); `.mean` the ancestral means (B, D)."""
        self.check_images(x)
        dims = self.prior_layers.dims
        first = gaussian_head(self.encoder, x)  # q(z_1|x): (B, D_1) each
        nets = [None, *(partial(gaussian_head, net) for net in self.upward)]
        return HierarchicalPosterior(
            dims, [first] + [None] * len(self.upward), nets, top_down=False
        )

    @property
    def prior_layers(self) -> HierarchicalPrior:
        """The prior, as the HierarchicalPrior it is."""
        assert isinstance(self.prior, HierarchicalPrior)
        return self.prior

    def top_gaussian(self, x: Tensor) -> DiagonalGaussian:
        """q(z_L | x) as one Gaussian, what a VampPrior on the top layer mixes: the posterior's
        top layer with the layers it depends on at their ancestral means (hvae: q(z_L | the
        means of the layers below); ladder: the bottom-up pass's top Gaussian)."""
        return DiagonalGaussian(*self.encode(x).ancestral[-1])

    @property
    def top_layer_dim(self) -> int:
        return self.config.latent_dims[-1]

    def codes_from_top(self, z_top: Tensor) -> Tensor:
        """Whole codes (N, D) from top-layer values (N, D_L), the lower layers at the means of
        p(z_l | z_{l+1}): what traversals of the top layer decode."""
        return self.prior_layers.lower_means(z_top)

    def loss(
        self,
        x: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """The negative ELBO with k samples (its KL by Monte Carlo, log q(z|x) - log p(z) at
        the draws, weighted by beta * kl_scale), or with objective "iwae" and k > 1 the
        negative importance-weighted bound (Burda et al. 2015, eq. 8). `recon` and `kl` are
        always the ELBO's terms, batch means of per-example sums."""
        k = self.config.k
        posterior = self.encode(x, y)
        z, log_qz = posterior.rsample_with_log_prob(k=None if k == 1 else k, generator=generator)
        terms = self.importance_terms(x, z, posterior, log_qz=log_qz)  # (B,) or (K, B) each
        recon, kl = -terms.log_px_z.mean(), (terms.log_qz - terms.log_pz).mean()
        weight = self.config.beta * kl_scale
        if self.config.objective == "iwae" and k > 1:
            total = -log_mean_exp(terms.log_weights(kl_weight=weight), dim=0).mean()
        else:
            total = recon + weight * kl
        return LossTerms(total=total, recon=recon, kl=kl)

    def measures(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Per layer l: `kl_z<l>`, E_q[log q(z_l | .) - log p(z_l | .)] per image, averaged (a
        Monte Carlo estimate from MEASURE_SAMPLES draws each, the same at every call; the
        layers' sum is the KL), and `active_units_z<l>`, the units of the layer with
        Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2015), E_q[z] taken as the ancestral `mean`."""
        dims = self.prior_layers.dims
        generator = torch.Generator(device=self.device).manual_seed(MEASURE_SEED)
        kl_sums = [0.0] * len(dims)
        means = []
        with torch.no_grad():
            for batch in x.split(MEASURE_BATCH):
                posterior = self.encode(batch.to(self.device, self.dtype))
                z = posterior.sample(k=MEASURE_SAMPLES, generator=generator)  # (S, B, D)
                log_q = posterior.layer_log_probs(z)  # L x (S, B)
                log_p = self.prior_layers.layer_log_probs(z)
                for layer, (q, p) in enumerate(zip(log_q, log_p, strict=True)):
                    kl_sums[layer] += float((q - p).double().mean(dim=0).sum())
                means.append(posterior.mean.double().cpu())
        variance = torch.cat(means).var(dim=0, correction=int(len(x) > 1))  # (D,)
        active = [int((v > ACTIVE_THRESHOLD).sum()) for v in split_layers(variance, dims)]
        kl = {f"kl_z{i + 1}": total / len(x) for i, total in enumerate(kl_sums)}
        return kl | {f"active_units_z{i + 1}": float(count) for i, count in enumerate(active)}


class LadderVAE(HierarchicalVAE):
    """Sønderby et al.'s (2016) ladder VAE: the generative model of HierarchicalVAE, inferred
    top-down (eq. 17-20). The bottom-up pass: the configured encoder gives (mu_hat_1,
    logvar_hat_1) from x, and an MLP each next layer's from the one below (the paper's
    d_l = MLP(d_{l-1}), its linear heads taken as the deterministic features).
    q(z_L|x) = N(mu_hat_L, var_hat_L); below, q(z_l | z_{l+1}, x) is N(mu_hat_l, var_hat_l)
    and p(z_l | z_{l+1}) weighted by precision (`precision_weighted`)."""

    title = "Ladder VAE"
    top_down = True

    def encode(self, x: Tensor, y: Tensor | None = None) -> HierarchicalPosterior:
        self.check_images(x)
        prior = self.prior_layers
        evidence = [gaussian_head(self.encoder, x)]  # (mu_hat_1, logvar_hat_1): (B, D_1) each
        for net in self.upward:
            evidence.append(gaussian_head(net, torch.cat(evidence[-1], dim=-1)))
        nets = [*(partial(prior.conditional, i) for i in range(len(self.upward))), None]
        return HierarchicalPosterior(prior.dims, evidence, nets, top_down=True)


__all__ = [
    "HierarchicalPosterior",
    "HierarchicalPrior",
    "HierarchicalVAE",
    "LadderVAE",
    "precision_weighted",
]
