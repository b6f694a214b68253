"""Encoder and decoder networks: `mlp` and `conv`, built for the data's own (C, H, W)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from vaelab.models.config import ModelConfig

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with the activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATION_LAYERS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_features): flatten, then hidden layers, then a linear head."""

    def __init__(self, config: ModelConfig, out_features: int) -> None:
        super().__init__()
        n_pixels = math.prod(config.data_shape)
        self.net = _mlp([n_pixels, *config.hidden_dims, out_features], config.activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """(B, D) -> (B, C, H, W) parameters of p(x|z) (logits or means): the encoder's hidden
    sizes mirrored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.data_shape = config.data_shape
        sizes = [config.latent_dim, *reversed(config.hidden_dims), math.prod(config.data_shape)]
        self.net = _mlp(sizes, config.activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.data_shape)


def conv_level_sizes(height: int, width: int, max_levels: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 level, halving while both sides stay >= 4.

    28x28 -> [(28, 28), (14, 14), (7, 7)]; 8x8 -> [(8, 8), (4, 4)]; 64x64 -> 64, 32, 16, 8, 4.
    """
    sizes = [(height, width)]
    while len(sizes) <= max_levels and min(sizes[-1]) >= 8:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (each halves H and W), then a linear head on the flat features."""

    def __init__(self, config: ModelConfig, out_features: int) -> None:
        super().__init__()
        channels, height, width = config.data_shape
        sizes = conv_level_sizes(height, width, len(config.conv_channels))
        widths = [channels, *config.conv_channels[: len(sizes) - 1]]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                ACTIVATION_LAYERS[config.activation](),
            ]
        if len(widths) == 1:  # too small to downsample: a shape-keeping conv instead
            widths.append(config.conv_channels[0])
            layers += [
                nn.Conv2d(channels, widths[-1], 3, padding=1),
                ACTIVATION_LAYERS[config.activation](),
            ]
        self.features = nn.Sequential(*layers)
        h, w = sizes[-1]
        self.head = nn.Linear(widths[-1] * h * w, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))  # (B, C', h, w) -> (B, out_features)


class ConvDecoder(nn.Module):
    """The encoder mirrored: linear to (C', h, w), then stride-2 transposed convolutions.

    A transposed conv with kernel 4, stride 2, padding 1 maps n to 2n + output_padding, so
    output_padding in {0, 1} restores odd sizes exactly (7 -> 3 -> 7).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels, height, width = config.data_shape
        sizes = conv_level_sizes(height, width, len(config.conv_channels))
        widths = [channels, *config.conv_channels[: len(sizes) - 1]]
        act = ACTIVATION_LAYERS[config.activation]
        if len(widths) == 1:
            widths.append(config.conv_channels[0])
            blocks: list[nn.Module] = [nn.Conv2d(widths[-1], channels, 3, padding=1)]
        else:
            blocks = []
            for level in range(len(sizes) - 1, 0, -1):  # from the smallest size back up
                (h_small, w_small), (h_big, w_big) = sizes[level], sizes[level - 1]
                pad = (h_big - 2 * h_small, w_big - 2 * w_small)
                blocks.append(
                    nn.ConvTranspose2d(
                        widths[level], widths[level - 1], 4, stride=2, padding=1, output_padding=pad
                    )
                )
                if level > 1:
                    blocks.append(act())
        self.start_shape = (widths[-1], *sizes[-1])
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, math.prod(self.start_shape)), act()
        )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, *self.start_shape)  # (B, C', h, w)
        return self.blocks(h)  # (B, C, H, W) parameters of p(x|z)


ENCODERS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "mlp": MLPEncoder,
    "conv": ConvEncoder,
}
DECODERS: dict[str, Callable[[ModelConfig], nn.Module]] = {"mlp": MLPDecoder, "conv": ConvDecoder}


def build_encoder(config: ModelConfig, out_features: int) -> nn.Module:
    return ENCODERS[config.architecture](config, out_features)


def build_decoder(config: ModelConfig) -> nn.Module:
    return DECODERS[config.architecture](config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prior_parameters(model: nn.Module) -> int:
    """The parameters of a prior fitted after training (a VQ-VAE's PixelCNN), which have their
    own files: a model's size is count_parameters(model) minus these."""
    fitted_after = getattr(model, "prior_fitted_after_training", False)
    return count_parameters(model.prior) if fitted_after else 0
