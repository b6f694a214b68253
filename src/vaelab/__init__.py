"""vaelab: variational and standard autoencoders — train, measure and explore latent spaces."""

from __future__ import annotations

from pathlib import Path

import torch

from vaelab._version import __version__
from vaelab.analysis.evaluate import EvalResult, evaluate
from vaelab.data import DataConfig, load_data
from vaelab.errors import VaelabError
from vaelab.models import (
    VAE,
    Autoencoder,
    DenoisingAutoencoder,
    LossTerms,
    ModelConfig,
    build_model,
)
from vaelab.training import OptimConfig, RunConfig, TrainConfig, TrainResult, train
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.runs import resolve_device


def load(
    path: str | Path, *, device: str | torch.device = "cpu", checkpoint: str = "best"
) -> Autoencoder:
    """A trained model, in eval mode on `device`, from a run folder or a checkpoint folder.

    For a run folder, `checkpoint` picks "best" (lowest validation loss) or "last".
    """
    model, _, _ = load_checkpoint(path, device=resolve_device(str(device)), prefer=checkpoint)
    return model


__all__ = [
    "VAE",
    "Autoencoder",
    "DataConfig",
    "DenoisingAutoencoder",
    "EvalResult",
    "LossTerms",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "VaelabError",
    "__version__",
    "build_model",
    "evaluate",
    "load",
    "load_data",
    "train",
]
