"""Shared fixtures: a fixed batch of real images and a tiny run configuration."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from vaelab import DataConfig, RunConfig, load_data

# The test models are tiny: with several threads, thread start-up and contention with other
# processes on a shared runner cost far more than the arithmetic (100x slower was measured).
torch.set_num_threads(1)
# ...and the same for every process a test starts (`vaelab` as a command, torchrun workers),
# which inherit the environment: a subprocess with torch's default threads once ran 100x slower
# on a loaded 2-core runner and failed its timeout.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def digits_x() -> torch.Tensor:
    """The training split of the built-in `digits` dataset (offline): (N, 1, 8, 8) in [0, 1]."""
    return load_data(DataConfig(dataset="digits"), progress=False).train.x


@pytest.fixture
def batch(digits_x: torch.Tensor) -> torch.Tensor:
    """A fixed batch of 32 digit images, (32, 1, 8, 8); a fresh copy for every test."""
    return digits_x[:32].clone()


def _tiny_run(epochs: int = 2, **sections: dict[str, Any]) -> RunConfig:
    values: dict[str, dict[str, Any]] = {
        "model": {"latent_dim": 2, "hidden_dims": [32], "conv_channels": [8, 16]},
        "data": {"dataset": "digits"},
        "optim": {"lr": 3e-3},
        "train": {"epochs": epochs, "batch_size": 128, "device": "cpu"},
    }
    for section, options in sections.items():
        values[section] = {**values[section], **options}
    return RunConfig.from_dict(values)


@pytest.fixture
def tiny_run():
    """`tiny_run(epochs, model={...}, train={...})`: a RunConfig for a small, fast model on
    `digits` (a few hundredths of a second per epoch); keyword sections override options."""
    return _tiny_run
