"""Loss over a whole tensor of data, batched and without gradients."""

from __future__ import annotations

import torch

from vaelab.data import draw_binary
from vaelab.models import Autoencoder
from vaelab.training.averages import LossMeans, RunningSums


def evaluate_loss(
    model: Autoencoder,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    batch_size: int = 1024,
    binarize: bool = False,
    seed: int = 0,
) -> LossMeans:
    """Mean loss terms (nats per example) over x (N, C, H, W), as training reports them;
    y (N,) are the labels a conditional model's loss takes.

    A fixed seed makes the posterior samples (and binarisation) the same at every call, so
    validation losses of successive epochs are comparable. The loss is the model's own
    objective (see `VAE.loss`); batches shrink with its k to bound memory.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed + 2)
    sums = RunningSums.zeros(x.device)
    eval_batch_size = max(max(batch_size, 256) // model.config.k, 1)  # (B * k) codes per batch
    with torch.inference_mode():
        for start in range(0, len(x), eval_batch_size):
            batch = x[start : start + eval_batch_size]
            if binarize:
                batch = draw_binary(batch, generator=generator)
            if y is None:
                terms = model.loss(batch, generator=generator)
            else:
                labels = y[start : start + eval_batch_size]
                terms = model.loss(batch, y=labels, generator=generator)
            sums.add(terms, len(batch))
    model.train(was_training)
    return sums.means()
