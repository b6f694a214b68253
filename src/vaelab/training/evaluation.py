"""Loss over a whole tensor of data, batched and without gradients."""

from __future__ import annotations

import torch

from vaelab.data import iterate_batches
from vaelab.models import Autoencoder


def evaluate_loss(
    model: Autoencoder,
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    binarize: bool = False,
    seed: int = 0,
    k: int = 1,
    objective: str = "elbo",
) -> dict[str, float]:
    """Mean loss terms (nats per example) over x (N, C, H, W).

    A fixed seed makes the posterior samples (and binarisation) the same at every call, so
    validation losses of successive epochs are comparable. `k` and `objective` are the
    training objective's (see `VAE.loss`); batches shrink with k to bound memory.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed + 2)
    sums = torch.zeros(3, device=x.device)
    with torch.inference_mode():
        for batch in iterate_batches(x, max(max(batch_size, 256) // k, 1), shuffle=False):
            if binarize:
                batch = torch.bernoulli(batch, generator=generator)
            terms = model.loss(batch, generator=generator, k=k, objective=objective)
            sums += torch.stack([terms.total, terms.recon, terms.kl]).float() * len(batch)
    model.train(was_training)
    total, recon, kl = (sums / len(x)).tolist()
    return {"loss": total, "recon": recon, "kl": kl}
