"""The conditional VAE (Sohn, Lee & Yan 2015): q(z|x, y), p(x|z, y) and a prior that is N(0, I)
or learned, p(z|y).

The condition y is a class label (B,), or, with `observe`, the observed quadrants of the image
itself: then y is the image holding them (the data x by default), the likelihood scores only
the unobserved pixels, and the model completes images (`complete`). Every bound is the VAE's
with y added: the ELBO, or the importance-weighted bound on log p(x|y).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.autoencoders import slerp
from vaelab.models.conditions import (
    Condition,
    LabelCondition,
    ObservedCondition,
    build_condition,
    scored_pixels,
)
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.networks import _mlp, build_decoder, build_encoder
from vaelab.models.priors import ConditionalGaussianPrior
from vaelab.models.vae import VAE


def condition_features(config: ModelConfig) -> int:
    """F, the size of the condition vector: K classes, or the C * H * W observed values."""
    channels, height, width = config.data_shape
    return channels * height * width if config.observe else config.classes


def plain(config: ModelConfig, **changes: object) -> ModelConfig:
    """The config of an unconditional network of the same architecture, with `changes`."""
    unconditional = {
        "model": "vae",
        "observe": None,
        "classes": 0,
        "conditional_prior": False,
        "classifier_weight": None,
        "labelled_size": None,
    }
    return replace(config, **(unconditional | changes))


class ConditionedEncoder(nn.Module):
    """(x, c) -> (B, out). The mlp reads [x, c] as one flat input; the conv net reads c as
    extra input planes: a label's one-hot as K constant planes, the observed part as an image.
    """

    def __init__(self, config: ModelConfig, out_features: int) -> None:
        super().__init__()
        channels, height, width = config.data_shape
        self.data_shape = config.data_shape
        self.flat = config.architecture == "mlp"
        self.image_condition = bool(config.observe)
        features = condition_features(config)
        if self.flat:
            shape = (channels * height * width + features, 1, 1)
        else:
            shape = (channels + (channels if self.image_condition else features), height, width)
        self.net = build_encoder(plain(config, data_shape=shape), out_features)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = c.to(x.dtype)
        if self.flat:
            return self.net(torch.cat([x.flatten(1), c], dim=1))
        _, height, width = self.data_shape
        if self.image_condition:
            planes = c.view(x.shape)
        else:
            planes = c[:, :, None, None].expand(-1, -1, height, width)  # (B, K, H, W)
        return self.net(torch.cat([x, planes], dim=1))


class ConditionedDecoder(nn.Module):
    """(z, c) -> the parameters of p(x|z, y): the decoder of the architecture on [z, c]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.data_shape = config.data_shape
        width = config.latent_dim + condition_features(config)
        self.net = build_decoder(plain(config, latent_dim=width))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        """z (..., B, D), c (B, F) -> (..., B, C, H, W)."""
        c = c.to(z.dtype).expand(*z.shape[:-1], c.shape[-1])
        zc = torch.cat([z, c], dim=-1)
        return self.net(zc.reshape(-1, zc.shape[-1])).view(*z.shape[:-1], *self.data_shape)


class CVAE(VAE):
    """A VAE whose encoder, decoder and (optionally) prior see a condition y."""

    conditional = True
    title = "Conditional VAE"

    def __init__(self, config: ModelConfig) -> None:
        if not config.observe and config.classes < 2:
            raise VaelabError(
                f"a {config.model} is conditional on a class label, so it needs data with "
                f"labels of 2 or more classes (this has {config.classes}): use a dataset with "
                "labels (digits, mnist, fashion-mnist, a folder of class sub-folders, an .npz "
                "with labels y)" + (" or --observe QUADRANTS" if config.model == "cvae" else "")
            )
        super().__init__(config)
        self.condition: Condition = build_condition(
            config.classes, config.observe, config.data_shape
        )
        if config.conditional_prior:
            sizes = [condition_features(config), *config.hidden_dims, 2 * config.latent_dim]
            self.prior = ConditionalGaussianPrior(config.latent_dim, _mlp(sizes, config.activation))

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        return ConditionedEncoder(self.config, self._encoder_outputs()), ConditionedDecoder(
            self.config
        )

    @property
    def needs_labels(self) -> bool:
        return isinstance(self.condition, LabelCondition)

    @property
    def classes(self) -> int:
        return self.config.classes

    def condition_vector(self, x: Tensor | None, y: Tensor | None) -> Tensor:
        """c (B, F) from the condition y; for an observed-part model, y defaults to x."""
        if isinstance(self.condition, ObservedCondition):
            y = x if y is None else y
            if y is not None:
                self.check_images(y)
        c = self.condition.vector(y)
        if x is not None and len(c) != len(x):
            raise VaelabError(f"pass one condition per image: {len(c)} for {len(x)} images")
        return c.to(self.device)

    def prior_condition(self, x: Tensor | None, y: Tensor | None) -> Tensor | None:
        return self.condition_vector(x, y)

    @property
    def scored_values(self) -> int:
        scored = self.condition.scored  # the unobserved pixels of an observed-part model
        return super().scored_values if scored is None else int(scored.sum())

    def log_likelihood(self, x_params: Tensor, x: Tensor) -> Tensor:
        scored = self.condition.scored
        return self.likelihood.log_prob(scored_pixels(x_params, scored), scored_pixels(x, scored))

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        self.check_images(x)
        c = self.condition_vector(x, y)
        mu, logvar = self.encoder(x, c).chunk(2, dim=1)  # (B, D) each
        return DiagonalGaussian(mu, logvar)

    def decode_params(self, z: Tensor, x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        self.check_codes(z)
        return self.decoder(z, self.condition_vector(x, y))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|z, y) in data space, (B, C, H, W). For an observed-part model, y
        is the images holding the observed part, which the result keeps: a completion."""
        self.check_codes(z)
        mean = self.likelihood.mean(self.decoder(z, self.condition_vector(None, y)))
        if isinstance(self.condition, ObservedCondition):
            mean = torch.where(self.condition.mask, y.to(mean), mean)
        return mean

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None and isinstance(self.condition, ObservedCondition):
            y = x
        return self.decode(self.encode(x, y).mode(), y)

    def interpolate(
        self,
        x_a: Tensor,
        x_b: Tensor,
        steps: int = 10,
        *,
        spherical: bool = False,
        y: Tensor | None = None,
    ) -> Tensor:
        """As the VAE's, with one condition for the whole path: a label y (a 0-d or (1,)
        tensor), or, for an observed-part model, x_a's observed part (the default)."""
        pair = torch.stack([x_a, x_b])
        if isinstance(self.condition, ObservedCondition):
            y = x_a[None] if y is None else y.reshape(1, *x_a.shape)
        elif y is not None:
            y = torch.as_tensor(y).reshape(1)
        pair_y = None if y is None else y.expand(2, *y.shape[1:])
        z = self.encode(pair, pair_y).mode()  # (2, D)
        t = torch.linspace(0.0, 1.0, steps, device=z.device, dtype=z.dtype)
        path = slerp(z[0], z[1], t) if spherical else torch.lerp(z[0], z[1], t[:, None])
        return self.decode(path, None if y is None else y.expand(steps, *y.shape[1:]))

    def complete(self, x: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n completions of each image's unobserved part, drawn from p(z|observed part):
        x (B, C, H, W) -> (n, B, C, H, W), the observed pixels kept as they are."""
        if not isinstance(self.condition, ObservedCondition):
            raise VaelabError(
                "this model is conditional on a class label: completing images needs a cvae "
                "trained with --observe QUADRANTS"
            )
        self.check_images(x)
        y = x.repeat(n, 1, 1, 1)  # (n * B, C, H, W): sample j of image b at j * B + b
        images = self.sample(len(y), y=y, generator=generator)
        return images.view(n, *x.shape)
