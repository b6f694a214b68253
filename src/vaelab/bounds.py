"""Importance-weighted bounds on log p(x) for a VAE (Burda, Grosse & Salakhutdinov 2015).

For z_s = mu + sigma * eps_s ~ q(z|x), the log importance weights are
    log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x),
and log (1/S) sum_s w_s is a lower bound on log p(x) that tightens as S grows (the ELBO at
S = 1). Everything here works on (B, S) tables of log weights: B examples, S samples each.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.distributions import LOG_2PI, DiagonalGaussian, standard_normal_log_prob


def log_weights(
    model: torch.nn.Module,
    x: Tensor,
    posterior: DiagonalGaussian,
    eps: Tensor,
    *,
    prior_scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """(log w, log p(x|z)), each (B, S), for the codes z = mu + sigma * eps, eps (B, S, D).

    `prior_scale` multiplies log p(z) - log q(z|x) (the KL part): the trainer's KL warm-up and
    beta; 1 gives the true weights. log q is computed from eps, exactly.
    """
    batch, samples, latent = eps.shape
    z = posterior.mu.unsqueeze(1) + posterior.std.unsqueeze(1) * eps  # (B, S, D)
    x_logits = model.decoder(z.reshape(batch * samples, latent)).reshape(batch, samples, -1)
    if model.context is not None:  # autoregressive: teacher-forced offsets
        x_logits = x_logits + model.context(x, x_logits)
    log_px_z = model.likelihood.log_prob(x_logits, x.flatten(1))
    log_pz = standard_normal_log_prob(z)
    # log q(z|x) = sum of log N(z; mu, sigma^2), written with eps = (z - mu) / sigma directly.
    log_qz = -0.5 * (LOG_2PI * latent + posterior.logvar.sum(-1, keepdim=True) + eps.pow(2).sum(-1))
    return log_px_z + prior_scale * (log_pz - log_qz), log_px_z


def log_mean_exp(log_w: Tensor, dim: int = -1) -> Tensor:
    """log (1/S) sum_s exp(log_w_s), stably (logsumexp)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def draw_noise(
    batch: int, samples: int, latent: int, *, like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Standard normal eps of shape (B, S, D), with the dtype and device of `like`."""
    return torch.randn(
        batch, samples, latent, generator=generator, device=like.device, dtype=like.dtype
    )
