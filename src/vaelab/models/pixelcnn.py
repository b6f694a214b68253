"""A gated PixelCNN (van den Oord, Kalchbrenner, Vinyals et al. 2016, "Conditional Image
Generation with PixelCNN Decoders") over grids of discrete codes: the learned prior of a VQ-VAE.

p(z) = prod_j p(z_j | z_<j) in raster order. Each layer has two stacks, so that no position
above and to the left is hidden from the model (the "blind spot" of a masked 3x3 stack):
- the vertical stack sees whole rows above the current one (a (k//2 + 1) x k convolution over
  the rows above, padded on top);
- the horizontal stack sees the current row to the left (a 1 x (k//2 + 1) convolution padded
  on the left), plus the vertical stack's features of the same row.
The first layer also hides the current row from the vertical stack and the current position
from the horizontal one (the paper's mask "A"); later layers may see their own position
(mask "B"), whose features already depend on earlier codes only. The activation is the
paper's gate, tanh(W_f * v) * sigmoid(W_g * v) (eq. 2), and a class label y adds a learned
bias to both halves (eq. 4) when the prior is conditional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.code_priors import CodePrior


@dataclass(frozen=True)
class PixelCNNConfig:
    """How to build the prior; saved with it. The defaults fit a 7 x 7 MNIST code grid in
    seconds per epoch on a CPU; the paper's ImageNet model had 15 layers of 384 channels."""

    codebook_size: int  # K, the number of values a code takes
    grid: tuple[int, int]  # (h, w)
    channels: int = 64
    layers: int = 6
    kernel: int = 3  # odd: the vertical stack is (k//2 + 1) x k, the horizontal 1 x (k//2 + 1)
    classes: int = 0  # > 0: p(z|y) for labels y in [0, classes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))
        for name in ("codebook_size", "channels", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise VaelabError(
                    f"the prior's {name} must be a positive whole number, got {value}"
                )
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise VaelabError(f"the prior's kernel must be odd and at least 3, got {self.kernel}")
        if len(self.grid) != 2 or min(self.grid) <= 0:
            raise VaelabError(f"the code grid must be two positive sizes, got {self.grid}")
        if self.classes < 0:
            raise VaelabError(f"classes must be 0 (unconditional) or more, got {self.classes}")


class GatedLayer(nn.Module):
    """One layer of both stacks: (v, h) (B, C, H, W) each -> (v', h'). A first layer (no
    residual connection) may read `in_channels` other than C."""

    def __init__(
        self,
        channels: int,
        kernel: int,
        *,
        first: bool,
        classes: int,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        half = kernel // 2
        self.half, self.first = half, first
        inputs = channels if in_channels is None else in_channels
        self.vertical = nn.Conv2d(inputs, 2 * channels, (half + 1, kernel))
        self.horizontal = nn.Conv2d(inputs, 2 * channels, (1, half + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Embedding(classes, 2 * channels) if classes else None
        vertical_mask = torch.ones(half + 1, kernel)
        horizontal_mask = torch.ones(1, half + 1)
        if first:  # mask "A": not the current row (vertical) nor the current position
            vertical_mask[-1] = 0
            horizontal_mask[:, -1] = 0
        self.register_buffer("vertical_mask", vertical_mask, persistent=False)
        self.register_buffer("horizontal_mask", horizontal_mask, persistent=False)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        half = self.half
        v_padded = F.pad(v, (half, half, half, 0))  # rows above, columns either side
        v_pre = F.conv2d(v_padded, self.vertical.weight * self.vertical_mask, self.vertical.bias)
        h_padded = F.pad(h, (half, 0, 0, 0))  # columns to the left
        h_pre = F.conv2d(
            h_padded, self.horizontal.weight * self.horizontal_mask, self.horizontal.bias
        )
        h_pre = h_pre + self.vertical_to_horizontal(v_pre)
        if self.condition is not None:
            if y is None:
                raise VaelabError("this prior is class-conditional: pass the labels y")
            bias = self.condition(y)[:, :, None, None]  # (B, 2C, 1, 1)
            v_pre, h_pre = v_pre + bias, h_pre + bias
        v_out = _gate(v_pre)
        h_out = self.horizontal_out(_gate(h_pre))
        return v_out, h_out if self.first else h_out + h  # no residual from the unmasked input


def _gate(pre: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) for the two halves a, b of the channels (the paper's eq. 2)."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelCNNPrior(CodePrior):
    """p(z) = prod_j softmax(logits_j) over K entries, logits_j from z_<j only."""

    title = "gated PixelCNN"

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__(config.codebook_size, config.grid)
        self.config = config
        channels = config.channels
        self.embed = nn.Embedding(config.codebook_size, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, config.kernel, first=i == 0, classes=config.classes)
            for i in range(config.layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, config.codebook_size, 1),
        )

    def describe(self) -> str:
        c = self.config
        conditional = f", conditional on {c.classes} classes" if c.classes else ""
        return f"gated PixelCNN ({c.layers} layers of {c.channels} channels{conditional})"

    def check_indices(self, indices: Tensor) -> None:
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.grid:
            raise VaelabError(
                f"code grids have shape {tuple(indices.shape)}, but this prior models "
                f"(B, {self.grid[0]}, {self.grid[1]})"
            )

    def logits_of_embedded(self, embedded: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits (B, K, h, w) from embedded codes (B, C, h, w); split out so that tests can
        differentiate with respect to the input."""
        v = h = embedded
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h)

    def logits(self, indices: Tensor, *, y: Tensor | None = None) -> Tensor:
        """Logits of p(z_j | z_<j) at every position j: indices (B, h, w) -> (B, K, h, w)."""
        self.check_indices(indices)
        embedded = self.embed(indices).permute(0, 3, 1, 2)  # (B, C, h, w)
        return self.logits_of_embedded(embedded, y)

    def log_prob_indices(self, indices: Tensor, *, y: Tensor | None = None) -> Tensor:
        logits = self.logits(indices, y=y).float()
        picked = -F.cross_entropy(logits, indices, reduction="none")  # (B, h, w)
        return picked.flatten(1).sum(dim=1)

    def nll(self, indices: Tensor, *, y: Tensor | None = None) -> Tensor:
        """The batch mean of -log p(z), in nats per code grid: the training loss."""
        return -self.log_prob_indices(indices, y=y).mean()

    @torch.no_grad()
    def sample_indices(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Ancestral sampling in raster order: one pass of the network per position."""
        network = self.embed.weight.device
        drawn_on = generator.device if generator is not None else network
        height, width = self.grid
        indices = torch.zeros(n, height, width, dtype=torch.long, device=network)
        for row in range(height):
            for col in range(width):
                logits = self.logits(indices, y=y)[:, :, row, col].float()  # (n, K)
                probs = torch.softmax(logits, dim=1).to(drawn_on)
                picked = torch.multinomial(probs, 1, generator=generator)[:, 0]
                indices[:, row, col] = picked.to(network)
        return indices.to(device if device is not None else network)

    def bits_per_code(self, nats_per_grid: float) -> float:
        return nats_per_grid / (math.prod(self.grid) * math.log(2.0))
