"""Training: configs, the loop, checkpoints and the run folder."""

from vaelab.training.callbacks import Callbacks
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.config import OptimConfig, RunConfig, TrainConfig, read_config_file
from vaelab.training.trainer import TrainingDiverged, TrainResult, train

__all__ = [
    "Callbacks",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "load_checkpoint",
    "read_config_file",
    "train",
]
