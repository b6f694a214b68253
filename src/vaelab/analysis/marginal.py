"""The per-image measures of one batch of `vaelab eval`, and M2's (Kingma et al. 2014): its
bound on log p(x) with the label y marginalised, and its ELBO -U(x) (eq. 7)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.models import Autoencoder
from vaelab.models.distributions import DiagonalGaussian


@dataclass(frozen=True)
class BatchTerms:
    """Per image of one batch: its code and the estimates `vaelab eval` averages."""

    codes: Tensor  # (B, D) posterior means E_q[z]
    kl_per_dim: Tensor | None  # (B, D), where the prior has a closed form
    squared: float  # summed squared error of the reconstructions
    log_px: Tensor  # (B,) float64: log (1/k) sum_i w_i
    recon: Tensor  # (B,) float64: E_q[-log p(x|z)]
    kl: Tensor  # (B,) float64: KL(q || p), of (y, z) for M2
    seconds: float  # spent on the importance-weighted estimate
    kl_label: Tensor | None = None  # (B,) float64: M2's KL(q(y|x) || p(y)), part of `kl`


@torch.inference_mode()
def marginal_terms(
    model: Autoencoder,
    x: Tensor,
    seeds: Sequence[int],
    *,
    k: int,
    chunk: int,
    bar: tqdm,
) -> BatchTerms:
    """An M2's measures of the images x (B, C, H, W), image i's noise seeded by seeds[i].

    log p(x) = log sum_y p(y) p(x|y): ceil(k / K) samples of z ~ q(z|x, y) for every class y
    (stratified, p(y) = 1/K), the weights of `M2.log_weights(x, k)` drawn in its order, so an
    image's estimate is -log_mean_exp(model.log_weights(x_i, k, generator=g)) with g seeded by
    seeds[i]. Beside it the ELBO with q(y|x): -U(x) = sum_y q(y|x) (E_q[-log p(x|y, z)]
    + KL(q(z|x, y) || p(z))) + KL(q(y|x) || p(y)), reported as reconstruction + KL. The code
    of an image is E_q[z] = sum_y q(y|x) mu(x, y); its reconstruction is decoded with the
    classifier's most probable class."""
    classes = model.classes
    per_class = math.ceil(k / classes)
    n = len(x)
    labels = [torch.full((n,), c, dtype=torch.long, device=x.device) for c in range(classes)]
    posteriors = [model.encode(x, label) for label in labels]
    q = model.predict_proba(x).double()  # (B, K): q(y|x)
    started = time.perf_counter()
    log_sum = torch.full((n,), -math.inf, device=x.device, dtype=torch.float64)
    recon = torch.zeros(classes, n, device=x.device, dtype=torch.float64)
    kl = torch.zeros_like(recon)
    # Every class of a pass's images decoded together (small decoder passes are slow): row
    # c * B + i of `stacked` is q(z|x_i, y=c).
    stacked = DiagonalGaussian(
        torch.cat([p.mu for p in posteriors]), torch.cat([p.logvar for p in posteriors])
    )
    per_pass = max(1, chunk // (classes * per_class))
    generator = torch.Generator(device=x.device)
    for start in range(0, n, per_pass):
        images = torch.arange(start, min(start + per_pass, n), device=x.device)
        rows = (torch.arange(classes, device=x.device)[:, None] * n + images).flatten()
        z = stacked.mu.new_empty(per_class, len(rows), stacked.mu.shape[1])
        for j, i in enumerate(images.tolist()):
            generator.manual_seed(seeds[i])
            for c in range(classes):  # M2.log_weights' order: class by class
                drawn = posteriors[c][i : i + 1].rsample(k=per_class, generator=generator)
                z[:, c * len(images) + j] = drawn[:, 0]
        posterior, x_rows, y_rows = stacked[rows], x[rows % n], rows // n
        samples = max(1, min(per_class, chunk // len(rows)))
        for offset in range(0, per_class, samples):
            z_chunk = z[offset : offset + samples]  # (samples, K * n_pass, D)
            terms = model.importance_terms(x_rows, z_chunk, posterior, y=y_rows)
            weights = terms.log_weights().double().view(len(z_chunk), classes, len(images))
            log_sum[images] = torch.logaddexp(log_sum[images], torch.logsumexp(weights, (0, 1)))
            recon[:, images] -= terms.log_px_z.double().sum(0).view(classes, -1)
            kl_chunk = model.kl(posterior, z_chunk).double().view(classes, -1)
            kl[:, images] += kl_chunk * len(z_chunk)
        bar.update(len(images))
    seconds = time.perf_counter() - started
    kl_label = math.log(classes) + torch.xlogy(q, q).sum(dim=1)  # log K - H(q(y|x))
    per_dim = [model.require_prior().kl_per_dim(p) for p in posteriors]
    return BatchTerms(
        codes=sum(q[:, c, None].to(p.mean) * p.mean for c, p in enumerate(posteriors)),
        kl_per_dim=None
        if any(d is None for d in per_dim)
        else sum(q[:, c, None].to(d) * d for c, d in enumerate(per_dim)),
        squared=float((model.reconstruct(x) - x).pow(2).sum()),
        log_px=log_sum - math.log(classes * per_class),
        recon=(q * recon.T).sum(dim=1) / per_class,
        kl=(q * kl.T).sum(dim=1) / per_class + kl_label,
        seconds=seconds,
        kl_label=kl_label,
    )
