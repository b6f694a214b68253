"""Learning-rate and KL-weight schedules: pure functions of the optimisation step."""

from __future__ import annotations

import math

from vaelab.training.config import OptimConfig


def learning_rate(step: int, total_steps: int, optim: OptimConfig) -> float:
    """The learning rate for `step` (0-based): linear warm-up, then constant or a decay."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    decay_steps = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / decay_steps)
    if optim.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear
        factor = 1.0 - progress
    return optim.lr * (optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * factor)


def kl_scale(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): weight rises 0 -> 1 linearly."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))
