"""vaelab: variational and standard autoencoders — train, measure and explore latent spaces.

The public names are imported on first use (PEP 562), so that `import vaelab` — and with it
`vaelab --help` — does not wait seconds for torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaelab.errors import VaelabError
from vaelab.version import __version__

if TYPE_CHECKING:
    import torch

    from vaelab.analysis.embedding import Embedding, embed
    from vaelab.analysis.evaluate import EvalResult, evaluate
    from vaelab.data import DataConfig, load_data
    from vaelab.disentanglement.evaluate import DisentanglementResult, evaluate_disentanglement
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

# Each lazily imported public name and the module that defines it.
_LAZY = {
    "Embedding": "vaelab.analysis.embedding",
    "embed": "vaelab.analysis.embedding",
    "EvalResult": "vaelab.analysis.evaluate",
    "evaluate": "vaelab.analysis.evaluate",
    "DataConfig": "vaelab.data",
    "load_data": "vaelab.data",
    "DisentanglementResult": "vaelab.disentanglement.evaluate",
    "evaluate_disentanglement": "vaelab.disentanglement.evaluate",
    "VAE": "vaelab.models",
    "Autoencoder": "vaelab.models",
    "DenoisingAutoencoder": "vaelab.models",
    "LossTerms": "vaelab.models",
    "ModelConfig": "vaelab.models",
    "build_model": "vaelab.models",
    "TrainedRun": "vaelab.runs",
    "open_run": "vaelab.runs",
    "OptimConfig": "vaelab.training",
    "RunConfig": "vaelab.training",
    "TrainConfig": "vaelab.training",
    "TrainResult": "vaelab.training",
    "train": "vaelab.training",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vaelab' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load(
    path: str | Path, *, device: str | torch.device = "cpu", checkpoint: str | None = None
) -> Autoencoder:
    """A trained model, in eval mode on `device`, from a run folder or a checkpoint folder.

    For a run folder, `checkpoint` picks "best" (lowest validation loss) or "last"; by default
    best/ when the run held out a validation split, else last/ (see `vaelab.runs.
    scored_checkpoint`). `open_run` gives its configuration, value range and data too.
    """
    from vaelab.runs import open_run

    return open_run(path, checkpoint=checkpoint, device=device).model


__all__ = [
    "VAE",
    "Autoencoder",
    "DataConfig",
    "DenoisingAutoencoder",
    "DisentanglementResult",
    "Embedding",
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
    "embed",
    "evaluate",
    "evaluate_disentanglement",
    "load",
    "load_data",
    "open_run",
    "train",
]
