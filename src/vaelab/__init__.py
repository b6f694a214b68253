"""vaelab: variational and standard autoencoders — train, measure and explore latent spaces."""

from __future__ import annotations

from pathlib import Path

import torch

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
from vaelab.runs import TrainedRun, open_run
from vaelab.training import OptimConfig, RunConfig, TrainConfig, TrainResult, train
from vaelab.version import __version__


def load(
    path: str | Path, *, device: str | torch.device = "cpu", checkpoint: str = "best"
) -> Autoencoder:
    """A trained model, in eval mode on `device`, from a run folder or a checkpoint folder.

    For a run folder, `checkpoint` picks "best" (lowest validation loss) or "last"; `open_run`
    gives its configuration, value range and data too.
    """
    return open_run(path, checkpoint=checkpoint, device=device).model


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
    "TrainedRun",
    "VaelabError",
    "__version__",
    "build_model",
    "evaluate",
    "load",
    "load_data",
    "open_run",
    "train",
]
