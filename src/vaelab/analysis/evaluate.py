"""A model measured the way the literature reports it: negative ELBO, importance-weighted NLL
(Burda et al. 2015), active units, KL per latent dimension and reconstruction error."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.data import draw_binary
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder, bits_per_dim
from vaelab.models.distributions import Posterior
from vaelab.training.precision import FP32, choose_precision

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
    prior: str | None = None  # the prior the bound was computed under, in words
    measures: dict[str, float] | None = None  # the model's own (a VQ-VAE's codebook usage...)
    point_posterior: bool = False  # q(z|x) a point mass: the bound is the ELBO, exact in k
    precision: str = FP32  # of the networks ("bf16" with amp); the log-weights are fp32 or wider

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
    amp: bool = False,
) -> EvalResult:
    """Measure `model` on x (N, C, H, W), on the model's device.

    For a VAE, k importance samples per example estimate log p(x); the decoder sees at most
    `chunk` (example, sample) pairs per pass, which bounds memory. `binarize` draws a fixed
    Bernoulli(x) copy of the data first (the protocol for dynamically binarised MNIST). The
    same `seed` draws the same samples whatever `chunk` is (figures agree to rounding).
    `amp` runs the networks in bfloat16 where the device has it natively (else it says so
    and stays in fp32); the samples, log-densities and log-weights stay in fp32 or wider.
    """
    if k <= 0 or chunk <= 0:
        raise VaelabError(f"k and chunk must be positive, got k={k}, chunk={chunk}")
    if k > MAX_K:
        raise VaelabError(f"k must be at most {MAX_K:,}, got {k:,}")
    if len(x) == 0:
        raise VaelabError("there are no examples to evaluate")
    precision = choose_precision(amp, model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision.autocast():
            x = x.to(device=model.device, dtype=model.dtype)
            model.check_data(x, where="the evaluation data")
            if binarize:
                generator = torch.Generator(device=x.device).manual_seed(seed)
                x = draw_binary(x, generator=generator)
            if model.has_prior:
                if not model.stochastic_encoder:
                    k = 1  # every sample of a point mass is the same code: one is exact
                result = _evaluate_vae(
                    model, x, k=k, chunk=chunk, seed=seed, binarize=binarize, progress=progress
                )
            else:
                result = _evaluate_autoencoder(model, x, binarize=binarize)
            return replace(result, precision=precision.name)
    finally:
        model.train(was_training)


def _evaluate_autoencoder(model: Autoencoder, x: Tensor, *, binarize: bool) -> EvalResult:
    started = time.perf_counter()
    recon, squared = 0.0, 0.0
    for batch in x.split(ENCODE_BATCH):
        code = model.encode(batch).mode()
        recon += float(model.likelihood.nll(model.decode_params(code, batch), batch).sum())
        squared += float((model.decode(code) - batch).pow(2).sum())
    return EvalResult(
        model=model.config.model,
        examples=len(x),
        binarized=binarize,
        recon=recon / len(x),
        mse=squared / x.numel(),
        seconds=time.perf_counter() - started,
    )


def _evaluate_vae(
    model: Autoencoder, x: Tensor, *, k: int, chunk: int, seed: int, binarize: bool, progress: bool
) -> EvalResult:
    """Each batch of images is encoded once; its posteriors serve every measure."""
    started = time.perf_counter()
    n = len(x)
    codes, kl_per_dim, kl = [], [], torch.empty(n, device=x.device, dtype=torch.float64)
    log_px, recon = torch.empty_like(kl), torch.empty_like(kl)
    squared, nll_seconds = 0.0, 0.0
    with tqdm(
        total=n,
        unit="img",
        desc=f"log p(x), k={k}",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        for start in range(0, n, ENCODE_BATCH):
            batch = x[start : start + ENCODE_BATCH]
            part = slice(start, start + len(batch))
            posterior = model.encode(batch)
            codes.append(posterior.mean)
            squared += float((model.decode(posterior.mean) - batch).pow(2).sum())
            per_dim = model.require_prior().kl_per_dim(posterior)
            if per_dim is not None:
                kl_per_dim.append(per_dim)
            nll_started = time.perf_counter()
            estimate = _importance_sample(
                model, batch, posterior, start, k=k, chunk=chunk, seed=seed, bar=bar
            )
            nll_seconds += time.perf_counter() - nll_started
            log_px[part], recon[part], kl[part] = estimate
    codes_all = torch.cat(codes)
    per_dim_mean = torch.cat(kl_per_dim).mean(0).tolist() if kl_per_dim else None
    # Undefined for one image, and not a question for a point mass on discrete codes.
    point = not model.stochastic_encoder
    variance = codes_all.var(dim=0) if n > 1 and not point else None
    nll, kl_mean, recon_mean = float(-log_px.mean()), float(kl.mean()), float(recon.mean())
    return EvalResult(
        model=model.config.model,
        examples=n,
        binarized=binarize,
        k=k,
        seed=seed,
        recon=recon_mean,
        mse=squared / x.numel(),
        kl=kl_mean,
        neg_elbo=recon_mean + kl_mean,
        nll=nll,
        nll_stderr=float(log_px.std() / math.sqrt(n)) if n > 1 else None,
        nll_bits_per_dim=bits_per_dim(nll, model.config.data_shape),
        active_units=None if variance is None else int((variance > ACTIVE_THRESHOLD).sum()),
        latent_dim=model.config.latent_dim,
        kl_per_dim=per_dim_mean,
        mean_variance_per_dim=None if variance is None else variance.tolist(),
        images_per_second=n / nll_seconds,
        seconds=time.perf_counter() - started,
        prior=model.require_prior().describe(),
        measures=model.measures(x) or None,
        point_posterior=point,
    )


def _importance_sample(
    model: Autoencoder,
    x: Tensor,
    posterior: Posterior,
    first_index: int,
    *,
    k: int,
    chunk: int,
    seed: int,
    bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per example of x (whose first has index `first_index` in the data): the log p(x)
    estimate log (1/k) sum w_i, and E_q[-log p(x|z)] and KL(q || p) from the same k samples
    (see `Autoencoder.kl`). Each pass decodes `per_pass` examples x
    `samples` samples; each example's k samples are drawn from its own seed."""
    n = len(x)
    samples = min(k, chunk)
    per_pass = max(1, chunk // k)
    log_px = torch.empty(n, device=x.device, dtype=torch.float64)
    recon, kl = torch.empty_like(log_px), torch.empty_like(log_px)
    generator = torch.Generator(device=x.device)
    for start in range(0, n, per_pass):
        part = slice(start, min(start + per_pass, n))
        batch, batch_posterior = x[part], posterior[part]
        z = []  # (k, 1, D) per example
        for i in range(part.start, part.stop):
            generator.manual_seed(image_seed(seed, first_index + i))
            z.append(posterior[i : i + 1].rsample(k=k, generator=generator))
        z = torch.cat(z, dim=1)  # (k, n_pass, D)
        log_sum = torch.full((len(batch),), -math.inf, device=x.device, dtype=torch.float64)
        recon_sum, kl_sum = torch.zeros_like(log_sum), torch.zeros_like(log_sum)
        for offset in range(0, k, samples):
            z_chunk = z[offset : offset + samples]  # (samples, n_pass, D)
            terms = model.importance_terms(batch, z_chunk, batch_posterior)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(terms.log_weights().double(), 0))
            recon_sum -= terms.log_px_z.double().sum(0)
            kl_sum += model.kl(batch_posterior, z_chunk).double() * len(z_chunk)
        log_px[part] = log_sum - math.log(k)
        recon[part] = recon_sum / k
        kl[part] = kl_sum / k
        bar.update(len(batch))
    return log_px, recon, kl
