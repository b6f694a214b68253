"""Models by name: `build_model(ModelConfig(model="vae", ...))`."""

from __future__ import annotations

from collections.abc import Callable

from vaelab.models.autoencoders import (
    VAE,
    Autoencoder,
    DenoisingAutoencoder,
    LossTerms,
    bits_per_dim,
    slerp,
)
from vaelab.models.config import ModelConfig

MODELS: dict[str, Callable[[ModelConfig], Autoencoder]] = {
    "vae": VAE,
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
}


def build_model(config: ModelConfig) -> Autoencoder:
    """A freshly initialised model of the kind `config.model` names (on the CPU, in float32)."""
    return MODELS[config.model](config)


__all__ = [
    "MODELS",
    "VAE",
    "Autoencoder",
    "DenoisingAutoencoder",
    "LossTerms",
    "ModelConfig",
    "bits_per_dim",
    "build_model",
    "slerp",
]
