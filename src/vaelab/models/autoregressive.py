"""Autoregressive decoder terms: p(x|z) = prod_j p(x_j | z, x_<j) in raster order.

A factorised decoder must explain every pixel from z alone, so neighbouring pixels of a stroke
are independent given z, which costs nats. Adding a term that sees the pixels before x_j (a
fully visible sigmoid belief net, Frey 1998; the role PixelCNN layers play in PixelVAE,
Gulrajani et al. 2016) lets z carry the global shape and the context the local detail:

    params_j = decoder(z)_j + context(x)_j,   context(x)_j depends on x_<j only,

where params are the likelihood's (Bernoulli logits or Gaussian means).

Training and likelihood evaluation see the real x (teacher forcing: one pass); decoding a z
without x (samples, interpolations) fills the pixels one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.pixelcnn import GatedLayer, _gate

LOCAL_KERNEL = 7  # the local context sees the 3 rows above and 3 pixels to each side
LOCAL_CHANNELS = 32  # hidden features of the local context
# The gated context's width, as the local one's: z explains the global shape, so the context
# models local detail only, and its stacks' arithmetic grows as the width squared (about
# 21 x 32^2 multiply-adds per pixel and layer). At 32, 4 layers already make an MNIST MLP VAE's
# training step about 40x slower (0.77 s against 0.018 s, batch 100, one CPU thread).
GATED_CHANNELS = 32
GATED_KERNEL = 3  # each layer reaches one row further up and one pixel further to either side
HEAD_VALUES = 1 << 18  # hidden values per step of the gated head: 1 MB, reused, not page faulted


class LinearContext(nn.Module):
    """context(x)_j = sum_{i < j} A_ji x_i: a strictly lower-triangular linear map over the
    flattened (C, H, W) values. Starts at zero, so training begins as a factorised decoder."""

    def __init__(self, n_values: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_values, n_values))
        self.register_buffer("mask", torch.ones(n_values, n_values).tril(-1), persistent=False)

    def forward(self, x: Tensor, base: Tensor) -> Tensor:
        """Offsets to the decoder's logits `base` (..., B, C, H, W), from x (B, C, H, W); they
        depend on x only, so one (B, C, H, W) tensor serves every sample of z."""
        offsets = x.flatten(1) @ (self.weight * self.mask).T  # (B, P)
        return offsets.view(x.shape)

    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x value by value: x_j = choose(base_j + context(x)_j). base (B, P) -> x (B, P).

        The context is linear, so each chosen x_j adds x_j * A[:, j] to every later logit.
        """
        weight = (self.weight * self.mask).T.contiguous()  # row j: A[:, j], the effect of x_j
        logits = base.clone()
        x = torch.empty_like(base)
        for j in range(base.shape[1]):
            x[:, j] = choose(logits[:, j])
            logits[:, j + 1 :] += x[:, j : j + 1] * weight[j, j + 1 :]
        return x


class LocalContext(nn.Module):
    """A one-layer PixelCNN (van den Oord et al. 2016): a masked k x k convolution over the
    pixels above and to the left (mask "A": not the pixel itself), ReLU, then a 1 x 1
    convolution to one offset per channel. Pixels are visited row by row; the channels of a
    pixel are independent given z and the pixels before it. The last layer starts at zero.

    `conditioned` also feeds the decoder's own logits around each pixel (a 3 x 3 convolution,
    no mask: they depend on z only) into the hidden features, so the local model can use what
    z says about the neighbourhood, as the PixelCNN layers of PixelVAE do (Gulrajani et al.
    2016). That convolution runs once per sample of z, the masked one once per image.
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        *,
        conditioned: bool = False,
        kernel: int = LOCAL_KERNEL,
        hidden: int = LOCAL_CHANNELS,
    ) -> None:
        super().__init__()
        self.data_shape = data_shape
        channels = data_shape[0]
        self.features = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.from_base = nn.Conv2d(channels, hidden, 1, bias=False) if conditioned else None
        self.out = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        mask = torch.ones(kernel, kernel)
        mask[kernel // 2, kernel // 2 :] = 0  # the pixel itself and those to its right
        mask[kernel // 2 + 1 :] = 0  # the rows below
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor, base: Tensor) -> Tensor:
        """Offsets to the decoder's logits `base` (..., B, C, H, W), from x (B, C, H, W).

        Unconditioned, they depend on x only: one (B, C, H, W) tensor serves every sample of z.
        """
        x = x.view(-1, *self.data_shape)
        weight = self.features.weight * self.mask
        pre = F.conv2d(x, weight, self.features.bias, padding=self.mask.shape[0] // 2)
        if self.from_base is None:
            return self.out(F.relu(pre))  # (B, C, H, W)
        from_base = self.from_base(base.reshape(-1, *self.data_shape))  # (K*B, hidden, H, W)
        hidden = F.relu(
            from_base.view(*base.shape[:-3], *pre.shape[1:]) + pre
        )  # (..., B, hid, H, W)
        return self.out(hidden.reshape(-1, *pre.shape[1:])).view(base.shape)

    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x pixel by pixel, each from the patch above and to its left: one small
        product per pixel. base (B, C*H*W) -> x (B, C*H*W)."""
        channels, height, width = self.data_shape
        kernel = self.mask.shape[0]
        half = kernel // 2
        bias = self.features.bias[:, None, None].expand(len(base), -1, height, width)
        if self.from_base is not None:  # the logits' part of the features: no causality needed
            bias = bias + self.from_base(base.view(-1, *self.data_shape))
        bias = bias.flatten(2)  # (B, hidden, H*W)
        base = base.view(len(base), channels, height * width)
        weight = (self.features.weight * self.mask).flatten(1).T  # (C*k*k, hidden)
        out_weight = self.out.weight.flatten(1).T  # (hidden, C)
        padded = base.new_zeros(len(base), channels, height + 2 * half, width + 2 * half)
        for row in range(height):
            for col in range(width):
                j = row * width + col
                patch = padded[:, :, row : row + kernel, col : col + kernel].flatten(1)
                hidden = F.relu(torch.addmm(bias[:, :, j], patch, weight))
                logits = base[:, :, j] + torch.addmm(self.out.bias, hidden, out_weight)
                padded[:, :, row + half, col + half] = choose(logits)
        return padded[:, :, half : half + height, half : half + width].flatten(1)


class GatedContext(nn.Module):
    """A gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
    Decoders") over x: `layers` GatedLayers (pixelcnn.py: a vertical and a horizontal stack, so
    no blind spot; tanh(a) * sigmoid(b) gates, eq. 2; residual horizontal stack; mask "A" in
    the first), then a head that brings in z:

        offsets = out(relu(h_L + from_base(base))),

    h_L the horizontal stack's last features, from_base a 1 x 1 convolution of the decoder's
    logits. Pixels are visited row by row; the channels of a pixel are independent given z and
    the pixels before it. `out` starts at zero, so training starts as the factorised decoder.

    Scoring is one pass ("teacher forcing"): the stacks read x only, so they run once per image
    whatever the number K of samples of z (`vaelab eval` draws 5000 per image); only the head,
    two 1 x 1 convolutions, runs per sample. Conditioning every layer on z, as PixelVAE does
    (Gulrajani et al. 2016), would run the stacks K times per image.
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        *,
        layers: int,
        hidden: int = GATED_CHANNELS,
        kernel: int = GATED_KERNEL,
    ) -> None:
        super().__init__()
        self.data_shape = data_shape
        channels = data_shape[0]
        self.layers = nn.ModuleList(
            GatedLayer(
                hidden, kernel, first=i == 0, classes=0, in_channels=channels if i == 0 else None
            )
            for i in range(layers)
        )
        # the head's 1 x 1 convolutions, on channels-last tensors
        self.from_base = nn.Linear(channels, hidden, bias=False)
        self.out = nn.Linear(hidden, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def features(self, x: Tensor) -> Tensor:
        """The horizontal stack's last features, from x only: (B, C, H, W) -> (B, hidden, H, W)."""
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, None)
        return h

    def head(self, features: Tensor, base: Tensor) -> Tensor:
        """out(relu(features + from_base(base))), channels last: features (..., hidden) and
        base (..., C) broadcast together -> offsets (..., C)."""
        return self.out(self.from_base(base).add_(features).relu_())  # in place: less memory

    def forward(self, x: Tensor, base: Tensor) -> Tensor:
        """Offsets to the decoder's logits `base` (..., B, C, H, W), from x (B, C, H, W)."""
        features = self.features(x.view(-1, *self.data_shape))  # (B, hidden, H, W): once
        features = features.permute(0, 2, 3, 1)  # (B, H, W, hidden)
        if base.dim() == 4:  # one code per image (training, ONNX export): one step
            return self.head(features, base.movedim(-3, -1)).movedim(-1, -3)
        samples = base.movedim(-3, -1).flatten(0, -5)  # (K, B, H, W, C)
        # the head a few samples at a time: one (K, B, H, W, hidden) tensor would cost more in
        # page faults than in arithmetic (10x, measured at K = 100, B = 10 on MNIST)
        per_step = max(1, HEAD_VALUES // features.numel())
        offsets = [self.head(features, part) for part in samples.split(per_step)]
        return torch.cat(offsets).view(*base.shape[:-3], *samples.shape[2:]).movedim(-1, -3)

    @torch.no_grad()
    def generate(self, base: Tensor, choose: Callable[[Tensor], Tensor]) -> Tensor:
        """Fill x pixel by pixel, keeping every layer's features of the pixels already filled:
        a row's vertical features see the rows above only, so they are computed once per row;
        each pixel then runs the horizontal stack and the head at its own position (a few
        (B, 2 hidden) products per layer). base (B, C*H*W) -> x (B, C*H*W).

        Runs without autograd: the steps write into shared feature buffers, and a graph
        over every pixel's step would cost more than the steps."""
        channels, height, width = self.data_shape
        n, hidden = len(base), self.out.in_features
        half = self.layers[0].half
        base = base.view(n, channels, height, width).permute(2, 3, 0, 1)  # (H, W, B, C)
        # each layer's vertical input, padded as GatedLayer pads it: rows above, columns aside
        vertical = [
            base.new_zeros(n, inputs, half + height, half + width + half)
            for inputs in [channels] + [hidden] * (len(self.layers) - 1)
        ]
        # each layer's horizontal input in the current row, padded on the left, then the output
        horizontal = [
            base.new_zeros(n, half + width, inputs)
            for inputs in [channels] + [hidden] * len(self.layers)
        ]
        steps = [self._horizontal_weights(layer) for layer in self.layers]
        x = base.new_zeros(height, width, n, channels)
        for row in range(height):
            from_vertical = self._vertical_row(vertical, row)  # (W, layers, B, 2 hidden)
            for col in range(width):
                features = self._horizontal_step(horizontal, steps, from_vertical[col], col)
                x[row, col] = value = choose(base[row, col] + self.head(features, base[row, col]))
                vertical[0][:, :, half + row, half + col] = value
                horizontal[0][:, half + col] = value
        return x.permute(2, 3, 0, 1).reshape(n, -1)

    def _vertical_row(self, vertical: list[Tensor], row: int) -> Tensor:
        """Every layer's vertical features of `row`, written into the next layer's input;
        returns what they add to the horizontal stack, (W, layers, B, 2 hidden)."""
        half = self.layers[0].half
        to_horizontal = []
        for i, layer in enumerate(self.layers):
            window = vertical[i][:, :, row : row + half + 1]  # the rows up to `row`, padded
            weight = layer.vertical.weight * layer.vertical_mask
            pre = F.conv2d(window, weight, layer.vertical.bias)  # (B, 2 hidden, 1, W)
            if i + 1 < len(self.layers):
                vertical[i + 1][:, :, half + row, half:-half] = _gate(pre)[:, :, 0]
            to_horizontal.append(layer.vertical_to_horizontal(pre)[:, :, 0].permute(2, 0, 1))
        return torch.stack(to_horizontal, 1)  # (W, layers, B, 2 hidden)

    @staticmethod
    def _horizontal_weights(layer: GatedLayer) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A layer's horizontal convolution as a product over the flattened (half + 1, inputs)
        window, and its 1 x 1 output convolution: (weight, bias, out weight, out bias)."""
        weight = (layer.horizontal.weight * layer.horizontal_mask)[:, :, 0]  # (2h, in, half+1)
        return (
            weight.permute(2, 1, 0).flatten(0, 1),  # ((half + 1) * inputs, 2 hidden)
            layer.horizontal.bias,
            layer.horizontal_out.weight.flatten(1).T,
            layer.horizontal_out.bias,
        )

    def _horizontal_step(
        self,
        horizontal: list[Tensor],
        steps: list[tuple[Tensor, Tensor, Tensor, Tensor]],
        from_vertical: Tensor,
        col: int,
    ) -> Tensor:
        """The horizontal stack at column `col` of the current row, each layer's output written
        into the next layer's input: returns the last features, (B, hidden)."""
        half = self.layers[0].half
        for i, (weight, bias, out_weight, out_bias) in enumerate(steps):
            window = horizontal[i][:, col : col + half + 1].flatten(1)  # (B, (half+1) inputs)
            pre = torch.addmm(bias, window, weight) + from_vertical[i]
            h = torch.addmm(out_bias, _gate(pre), out_weight)
            if i > 0:  # the residual connection (none from the first layer's masked input)
                h = h + horizontal[i][:, half + col]
            horizontal[i + 1][:, half + col] = h
        return horizontal[-1][:, half + col]


def build_context(
    kind: str, data_shape: tuple[int, int, int], *, layers: int = 1
) -> LinearContext | LocalContext | GatedContext | None:
    """The context term a ModelConfig's `autoregressive` names, or None for "none"; `layers`
    is the gated term's depth."""
    if kind == "none":
        return None
    if kind in ("local", "local-z"):
        return LocalContext(data_shape, conditioned=kind == "local-z")
    if kind == "gated":
        return GatedContext(data_shape, layers=layers)
    return LinearContext(math.prod(data_shape))
