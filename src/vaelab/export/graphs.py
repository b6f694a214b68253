"""The encoder and decoder of a model as plain modules with tensor inputs and outputs: what the
ONNX exporter traces, and what the exported files are checked against.

Each graph returns a tuple of tensors whose names (`output_names`) the ONNX files keep:
- the encoder maps images x (B, C, H, W) to the posterior's parameters: `mean` and
  `log_variance` (B, D) for a Gaussian posterior, `mean` alone for an autoencoder's point mass;
- a factorised decoder maps codes z (B, D) to the mean of p(x|z) (B, C, H, W), and for a
  Bernoulli decoder also its `logits`;
- an autoregressive decoder cannot decode z alone in one pass (each pixel depends on those
  before it), so its graph is the one-pass scoring function: (z, x) -> the parameters of
  p(x_j | z, x_<j) for every pixel j, read from the given x (teacher forcing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models import Autoencoder
from vaelab.models.distributions import DiagonalGaussian, PointMass

# The posterior types an encoder graph can return, and the names of their parameters.
POSTERIOR_OUTPUTS: dict[type, tuple[str, ...]] = {
    DiagonalGaussian: ("mean", "log_variance"),
    PointMass: ("mean",),
}
_POSTERIOR_TENSORS: dict[type, Callable[..., tuple[Tensor, ...]]] = {
    DiagonalGaussian: lambda posterior: (posterior.mu, posterior.logvar),
    PointMass: lambda posterior: (posterior.z,),
}


class EncoderGraph(nn.Module):
    """x (B, C, H, W) -> the posterior's parameters (see POSTERIOR_OUTPUTS)."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        posterior = self.model.encode(x)
        return _POSTERIOR_TENSORS[type(posterior)](posterior)


class DecoderGraph(nn.Module):
    """z (B, D) -> (mean,) or (mean, logits) of a factorised p(x|z), each (B, C, H, W)."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> tuple[Tensor, ...]:
        return _decoder_outputs(self.model, self.model.decode_params(z))


class ScoringDecoderGraph(nn.Module):
    """(z (B, D), x (B, C, H, W)) -> (mean,) or (mean, logits) of p(x_j | z, x_<j) for every
    pixel j: an autoregressive decoder's one-pass scoring function."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        return _decoder_outputs(self.model, self.model.decode_params(z, x))


def _decoder_outputs(model: Autoencoder, x_params: Tensor) -> tuple[Tensor, ...]:
    mean = model.likelihood.mean(x_params)
    return (mean, x_params) if model.likelihood.name == "bernoulli" else (mean,)


def decoder_output_names(model: Autoencoder) -> tuple[str, ...]:
    return ("mean", "logits") if model.likelihood.name == "bernoulli" else ("mean",)


@dataclass(frozen=True)
class ModelGraphs:
    """A model's two graphs, with the names of their inputs and outputs."""

    encoder: EncoderGraph
    encoder_outputs: tuple[str, ...]
    decoder: DecoderGraph | ScoringDecoderGraph
    decoder_inputs: tuple[str, ...]
    decoder_outputs: tuple[str, ...]

    @property
    def autoregressive(self) -> bool:
        return isinstance(self.decoder, ScoringDecoderGraph)


def model_graphs(model: Autoencoder) -> ModelGraphs:
    """The graphs of `model`; a one-line VaelabError for a model they cannot express."""
    if model.conditional:
        raise VaelabError(
            f"cannot export this {model.config.model} yet: its encoder and decoder also take the "
            "condition y, which this vaelab's ONNX graphs have no input for (vaelab pack "
            "--no-onnx bundles it without them)"
        )
    with torch.inference_mode():
        posterior = model.encode(torch.zeros(1, *model.config.data_shape, device=model.device))
    if type(posterior) not in POSTERIOR_OUTPUTS:
        raise VaelabError(
            f"cannot export a {model.config.model}: its posterior, a "
            f"{type(posterior).__name__}, has no ONNX form in this vaelab (vaelab pack "
            "--no-onnx bundles it without one)"
        )
    autoregressive = model.context is not None
    return ModelGraphs(
        encoder=EncoderGraph(model),
        encoder_outputs=POSTERIOR_OUTPUTS[type(posterior)],
        decoder=ScoringDecoderGraph(model) if autoregressive else DecoderGraph(model),
        decoder_inputs=("z", "x") if autoregressive else ("z",),
        decoder_outputs=decoder_output_names(model),
    )
