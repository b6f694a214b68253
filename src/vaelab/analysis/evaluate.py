"""A model measured the way the literature reports it: negative ELBO, importance-weighted NLL
(Burda et al. 2015), active units, KL per latent dimension and reconstruction error."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.bounds import log_weights
from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models import VAE, Autoencoder, bits_per_dim

DEFAULT_K = 5000  # Burda et al. (2015) report test NLL with k = 5000
DEFAULT_CHUNK = 4096  # decoder evaluations (images x samples) per pass: 13 MB of MNIST logits,
# which stay in cache; larger passes were slower on a 2-core CPU (benchmarks/eval_speed.py)
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2015): unit u is active when Cov_x(E_q[z_u]) > 0.01
ENCODE_BATCH = 1024
MAX_K = 1_000_000  # each image's k x D noise is drawn at once (200 MB at D = 50)


@dataclass(frozen=True)
class EvalResult:
    """Means over the evaluated examples, in nats per example unless named otherwise.

    For `ae`/`dae` models only `recon` and `mse` apply; the VAE fields are None.
    """

    model: str
    examples: int
    binarized: bool
    recon: float  # vae: E_q[-log p(x|z)]; ae: -log p(x | decode(encode(x)))
    mse: float  # squared error per pixel of the reconstruction (the decoded posterior mean)
    seconds: float
    k: int | None = None
    seed: int | None = None
    kl: float | None = None
    neg_elbo: float | None = None
    nll: float | None = None  # -log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x)
    nll_stderr: float | None = None  # standard error of `nll` over the examples
    nll_bits_per_dim: float | None = None
    active_units: int | None = None
    latent_dim: int | None = None
    kl_per_dim: list[float] | None = None
    mean_variance_per_dim: list[float] | None = None  # Cov_x(E_q[z_u]), the active-unit test
    images_per_second: float | None = None  # of the importance-weighted pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_seed(seed: int, index: int) -> int:
    """The noise seed of example `index`: results do not depend on how examples are batched."""
    return (seed * 0x9E3779B97F4A7C15 + index) % 2**63


def evaluate(
    model: Autoencoder,
    x: Tensor,
    *,
    k: int = DEFAULT_K,
    chunk: int = DEFAULT_CHUNK,
    seed: int = 0,
    binarize: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Measure `model` on x (N, C, H, W), on the model's device.

    For a VAE, k importance samples per example estimate log p(x); the decoder sees at most
    `chunk` (example, sample) pairs per pass, which bounds memory. `binarize` draws a fixed
    Bernoulli(x) copy of the data first (the protocol for dynamically binarised MNIST). The
    same `seed` draws the same samples whatever `chunk` is (figures agree to rounding).
    """
    if k <= 0 or chunk <= 0:
        raise VaelabError(f"k and chunk must be positive, got k={k}, chunk={chunk}")
    if k > MAX_K:
        raise VaelabError(f"k must be at most {MAX_K:,}, got {k:,}")
    if len(x) == 0:
        raise VaelabError("there are no examples to evaluate")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = x.to(device=model.device, dtype=model.dtype)
            model.check_data(x, where="the evaluation data")
            if binarize:
                generator = torch.Generator(device=x.device).manual_seed(seed)
                x = torch.bernoulli(x, generator=generator)
            if isinstance(model, VAE):
                return _evaluate_vae(model, x, k=k, chunk=chunk, seed=seed, binarize=binarize,
                                     progress=progress)  # fmt: skip
            return _evaluate_autoencoder(model, x, binarize=binarize)
    finally:
        model.train(was_training)


def _evaluate_autoencoder(model: Autoencoder, x: Tensor, *, binarize: bool) -> EvalResult:
    started = time.perf_counter()
    recon, squared = 0.0, 0.0
    for batch in x.split(ENCODE_BATCH):
        code = model.encode(batch).mode()
        recon += float(model.likelihood.nll(model.decode_logits(code, batch), batch).sum())
        squared += float((model.decode(code) - batch).pow(2).sum())
    return EvalResult(
        model=model.config.model, examples=len(x), binarized=binarize, recon=recon / len(x),
        mse=squared / x.numel(), seconds=time.perf_counter() - started,
    )  # fmt: skip


def _evaluate_vae(
    model: VAE, x: Tensor, *, k: int, chunk: int, seed: int, binarize: bool, progress: bool
) -> EvalResult:
    started = time.perf_counter()
    mu, logvar, squared = [], [], 0.0
    for batch in x.split(ENCODE_BATCH):
        posterior = model.encode(batch)
        mu.append(posterior.mu)
        logvar.append(posterior.logvar)
        squared += float((model.decode(posterior.mu) - batch).pow(2).sum())
    posterior = DiagonalGaussian(torch.cat(mu), torch.cat(logvar))
    kl_per_dim = posterior.kl_per_dim()

    nll_started = time.perf_counter()
    log_px, recon = _importance_sample(model, x, posterior, k=k, chunk=chunk, seed=seed,
                                       progress=progress)  # fmt: skip
    nll_seconds = time.perf_counter() - nll_started

    n = len(x)
    kl = float(kl_per_dim.sum(1).mean())
    variance = posterior.mu.var(dim=0) if n > 1 else None  # undefined for one image
    nll = float(-log_px.mean())
    return EvalResult(
        model=model.config.model, examples=n, binarized=binarize, k=k, seed=seed,
        recon=float(recon.mean()), mse=squared / x.numel(), kl=kl,
        neg_elbo=float(recon.mean()) + kl, nll=nll,
        nll_stderr=float(log_px.std() / math.sqrt(n)) if n > 1 else None,
        nll_bits_per_dim=bits_per_dim(nll, model.config.data_shape),
        active_units=None if variance is None else int((variance > ACTIVE_THRESHOLD).sum()),
        latent_dim=model.config.latent_dim, kl_per_dim=kl_per_dim.mean(0).tolist(),
        mean_variance_per_dim=None if variance is None else variance.tolist(),
        images_per_second=n / nll_seconds,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def _importance_sample(
    model: VAE, x: Tensor, posterior: DiagonalGaussian, *, k: int, chunk: int, seed: int,
    progress: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per example: the log p(x) estimate log (1/k) sum w_i, and E_q[-log p(x|z)] from the
    same k samples, given q(z|x) of every example. Each pass decodes `per_pass` examples x
    `samples` samples."""
    n, latent = len(x), model.config.latent_dim
    samples = min(k, chunk)
    per_pass = max(1, chunk // k)
    log_px = torch.empty(n, device=x.device, dtype=torch.float64)
    recon = torch.empty_like(log_px)
    generator = torch.Generator(device=x.device)
    with tqdm(total=n, unit="img", desc=f"log p(x), k={k}", disable=not progress,
              leave=False, dynamic_ncols=True) as bar:  # fmt: skip
        for start in range(0, n, per_pass):
            batch = x[start : start + per_pass]
            part = slice(start, start + len(batch))
            batch_posterior = DiagonalGaussian(posterior.mu[part], posterior.logvar[part])
            eps = torch.empty(len(batch), k, latent, device=x.device, dtype=x.dtype)
            for i in range(len(batch)):
                generator.manual_seed(image_seed(seed, start + i))
                eps[i].normal_(generator=generator)
            log_sum = torch.full((len(batch),), -math.inf, device=x.device, dtype=torch.float64)
            recon_sum = torch.zeros_like(log_sum)
            for offset in range(0, k, samples):
                log_w, log_px_z = log_weights(
                    model, batch, batch_posterior, eps[:, offset : offset + samples]
                )
                log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w.double(), dim=1))
                recon_sum -= log_px_z.double().sum(1)
            log_px[part] = log_sum - math.log(k)
            recon[part] = recon_sum / k
            bar.update(len(batch))
    return log_px, recon
