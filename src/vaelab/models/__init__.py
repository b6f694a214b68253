"""Models by name: `build_model(ModelConfig(model="vae", ...))`.

A new model is one file in this package plus an entry in MODELS; the contract suite in
tests/test_models.py then runs over it.
"""

from __future__ import annotations

from vaelab.models.autoencoders import (
    Autoencoder,
    DenoisingAutoencoder,
    LossTerms,
    bits_per_dim,
    slerp,
)
from vaelab.models.btcvae import BetaTCVAE
from vaelab.models.config import ModelConfig
from vaelab.models.cvae import CVAE
from vaelab.models.dipvae import DIPVAE
from vaelab.models.factorvae import FactorVAE
from vaelab.models.hierarchical import HierarchicalVAE, LadderVAE
from vaelab.models.m2 import M2
from vaelab.models.vae import VAE
from vaelab.models.vqvae import VQVAE

MODELS: dict[str, type[Autoencoder]] = {
    "vae": VAE,
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
    "vqvae": VQVAE,
    "btcvae": BetaTCVAE,
    "factorvae": FactorVAE,
    "dipvae": DIPVAE,
    "cvae": CVAE,
    "m2": M2,
    "hvae": HierarchicalVAE,
    "ladder": LadderVAE,
}


def build_model(config: ModelConfig) -> Autoencoder:
    """A freshly initialised model of the kind `config.model` names (on the CPU, in float32)."""
    return MODELS[config.model](config)


__all__ = [
    "CVAE",
    "DIPVAE",
    "M2",
    "MODELS",
    "VAE",
    "VQVAE",
    "Autoencoder",
    "BetaTCVAE",
    "FactorVAE",
    "HierarchicalVAE",
    "LadderVAE",
    "DenoisingAutoencoder",
    "LossTerms",
    "ModelConfig",
    "bits_per_dim",
    "build_model",
    "slerp",
]
