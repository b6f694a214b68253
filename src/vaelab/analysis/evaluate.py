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

from vaelab.analysis.labels import classification_summary, has_classifier
from vaelab.analysis.marginal import BatchTerms, marginal_terms
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

    For `ae`/`dae` models only `recon` and `mse` apply; the VAE fields are None. The fields
    from `condition` on are a conditional model's (cvae, m2), left out of `to_dict` otherwise.
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
    condition: str | None = None  # what a conditional model is conditioned on, in words
    nll_of: str | None = None  # what `nll` bounds: "-log p(x|y)", "-log p(x)" (y marginalised)...
    kl_label: float | None = None  # M2: KL(q(y|x) || p(y)), the label's part of `kl`
    accuracy: float | None = None  # M2: its classifier's accuracy on the labelled images
    confusion: list[list[int]] | None = None  # M2: rows the true class, columns the predicted

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for name in CONDITIONAL_FIELDS:
            if values[name] is None:
                del values[name]  # an unconditional run's record keeps the keys it always had
        return values


CONDITIONAL_FIELDS = ("condition", "nll_of", "kl_label", "accuracy", "confusion")


def image_seed(seed: int, index: int) -> int:
    """The noise seed of example `index`: results do not depend on how examples are batched."""
    return (seed * 0x9E3779B97F4A7C15 + index) % 2**63


def evaluate(
    model: Autoencoder,
    x: Tensor,
    *,
    y: Tensor | None = None,
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

    A conditional model is scored on what it models: a label cvae's bound is on -log p(x|y)
    with the images' labels y (N,), required; an observed-quadrant cvae's on
    -log p(x_unobserved | x_observed); an m2's on -log p(x), y marginalised, with its
    classifier's accuracy and confusion matrix on the images labelled in y (where given).
    Unconditional models ignore y.
    """
    if k <= 0 or chunk <= 0:
        raise VaelabError(f"k and chunk must be positive, got k={k}, chunk={chunk}")
    if k > MAX_K:
        raise VaelabError(f"k must be at most {MAX_K:,}, got {k:,}")
    if len(x) == 0:
        raise VaelabError("there are no examples to evaluate")
    y = _labels(model, x, y)
    precision = choose_precision(amp, model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision.autocast():
            x = x.to(device=model.device, dtype=model.dtype)
            model.check_data(x, where="the evaluation data")
            if binarize:  # drawn on the CPU from the seed: the same images on every device
                generator = torch.Generator().manual_seed(seed)
                x = draw_binary(x.cpu(), generator=generator).to(model.device)
            if model.has_prior:
                if not model.stochastic_encoder:
                    k = 1  # every sample of a point mass is the same code: one is exact
                result = _evaluate_vae(
                    model, x, y, k=k, chunk=chunk, seed=seed, binarize=binarize, progress=progress
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


def _labels(model: Autoencoder, x: Tensor, y: Tensor | None) -> Tensor | None:
    """The labels a conditional model is evaluated with, on its device; None for others."""
    if not model.conditional or y is None:
        if model.needs_labels and not has_classifier(model):
            raise VaelabError(
                f"this {model.config.model} is conditional on a class label, so its likelihood "
                "-log p(x|y) needs the images' labels: evaluate it on data with labels"
            )
        return None
    y = torch.as_tensor(y)
    if y.shape != (len(x),):
        raise VaelabError(f"pass one label per image: labels {tuple(y.shape)} for {len(x)} images")
    return y.to(model.device, torch.long)


def _likelihood_of(model: Autoencoder) -> str | None:
    """What a conditional model's NLL bounds, in symbols (None: -log p(x), unconditional)."""
    if not model.conditional:
        return None
    if has_classifier(model):
        return "-log p(x)"
    return "-log p(x|y)" if model.needs_labels else "-log p(x_unobserved | x_observed)"


def _evaluate_vae(
    model: Autoencoder,
    x: Tensor,
    y: Tensor | None,
    *,
    k: int,
    chunk: int,
    seed: int,
    binarize: bool,
    progress: bool,
) -> EvalResult:
    """Each batch of images is encoded once; its posteriors serve every measure."""
    started = time.perf_counter()
    n = len(x)
    if has_classifier(model):  # M2 draws ceil(k / K) samples per class: say how many in all
        k = model.classes * math.ceil(k / model.classes)
    batches: list[BatchTerms] = []
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
            seeds = [image_seed(seed, start + i) for i in range(len(batch))]
            if has_classifier(model):  # M2: y marginalised
                batches.append(marginal_terms(model, batch, seeds, k=k, chunk=chunk, bar=bar))
                continue
            condition = _condition(
                model, batch, None if y is None else y[start : start + len(batch)]
            )
            batches.append(_batch_terms(model, batch, condition, seeds, k=k, chunk=chunk, bar=bar))
    codes_all = torch.cat([b.codes for b in batches])
    per_dims = [b.kl_per_dim for b in batches if b.kl_per_dim is not None]
    per_dim_mean = torch.cat(per_dims).mean(0).tolist() if per_dims else None
    log_px, recon, kl = (
        torch.cat([getattr(b, f) for b in batches]) for f in ("log_px", "recon", "kl")
    )
    squared = sum(b.squared for b in batches)
    nll_seconds = sum(b.seconds for b in batches)
    # Undefined for one image, and not a question for a point mass on discrete codes.
    point = not model.stochastic_encoder
    variance = codes_all.var(dim=0) if n > 1 and not point else None
    nll, kl_mean, recon_mean = float(-log_px.mean()), float(kl.mean()), float(recon.mean())
    pixels = model.scored_values  # all, or a completion model's unobserved ones
    return EvalResult(
        model=model.config.model,
        examples=n,
        binarized=binarize,
        k=k,
        seed=seed,
        recon=recon_mean,
        mse=squared / (n * pixels),
        kl=kl_mean,
        neg_elbo=recon_mean + kl_mean,
        nll=nll,
        nll_stderr=float(log_px.std() / math.sqrt(n)) if n > 1 else None,
        nll_bits_per_dim=bits_per_dim(nll, (1, 1, pixels)),
        active_units=None if variance is None else int((variance > ACTIVE_THRESHOLD).sum()),
        latent_dim=model.config.latent_dim,
        kl_per_dim=per_dim_mean,
        mean_variance_per_dim=None if variance is None else variance.tolist(),
        images_per_second=n / nll_seconds,
        seconds=time.perf_counter() - started,
        prior=model.require_prior().describe(),
        measures=None if model.conditional else model.measures(x) or None,
        point_posterior=point,
        **_conditional_fields(model, x, y, batches),
    )


def _condition(model: Autoencoder, batch: Tensor, labels: Tensor | None) -> Tensor | None:
    """The condition y of a batch: its labels for a label cvae, the images themselves for an
    observed-quadrant cvae (whose condition is their observed part), None for others."""
    if not model.conditional:
        return None
    return labels if model.needs_labels else batch


def _conditional_fields(
    model: Autoencoder, x: Tensor, y: Tensor | None, batches: list[BatchTerms]
) -> dict[str, Any]:
    """The EvalResult fields of a conditional model; none for others."""
    if not model.conditional:
        return {}
    fields: dict[str, Any] = {
        "condition": model.condition.describe(),
        "nll_of": _likelihood_of(model),
    }
    if has_classifier(model):
        fields["kl_label"] = float(torch.cat([b.kl_label for b in batches]).mean())
        if y is not None and bool((y >= 0).any()):
            summary = classification_summary(model, x, y)
            fields["accuracy"] = summary.accuracy
            fields["confusion"] = [list(row) for row in summary.confusion]
    return fields


def _batch_terms(
    model: Autoencoder,
    batch: Tensor,
    condition: Tensor | None,
    seeds: list[int],
    *,
    k: int,
    chunk: int,
    bar: tqdm,
) -> BatchTerms:
    """The measures of a batch, under q(z|x) (q(z|x, y) for a conditional model)."""
    posterior = model.encode(batch, condition)
    prior_condition = model.prior_condition(batch, condition)  # None for unconditional models
    squared = float((model.decode(posterior.mean, condition) - batch).pow(2).sum())
    per_dim = model.require_prior().kl_per_dim(posterior, y=prior_condition)
    nll_started = time.perf_counter()
    log_px, recon, kl = _importance_sample(
        model, batch, posterior, seeds, condition, prior_condition, k=k, chunk=chunk, bar=bar
    )
    seconds = time.perf_counter() - nll_started
    return BatchTerms(posterior.mean, per_dim, squared, log_px, recon, kl, seconds)


def _importance_sample(
    model: Autoencoder,
    x: Tensor,
    posterior: Posterior,
    seeds: list[int],
    condition: Tensor | None,
    prior_condition: Tensor | None,
    *,
    k: int,
    chunk: int,
    bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per example of x: the log p(x) estimate log (1/k) sum w_i, and E_q[-log p(x|z)] and
    KL(q || p) from the same k samples (see `Autoencoder.kl`). Each pass decodes `per_pass`
    examples x `samples` samples; example i's k samples are drawn from seeds[i], so results
    do not depend on how examples are batched. `condition` and `prior_condition` (B, ...)
    are a conditional model's y and the prior's condition (`prior_condition`)."""
    n = len(x)
    samples = min(k, chunk)
    per_pass = max(1, chunk // k)
    log_px = torch.empty(n, device=x.device, dtype=torch.float64)
    recon, kl = torch.empty_like(log_px), torch.empty_like(log_px)
    generator = torch.Generator(device=x.device)
    for start in range(0, n, per_pass):
        part = slice(start, min(start + per_pass, n))
        batch, batch_posterior = x[part], posterior[part]
        y = None if condition is None else condition[part]
        prior_y = None if prior_condition is None else prior_condition[part]
        draws = []  # (z (k, 1, D), log q(z|x) (k, 1)) per example
        for i in range(part.start, part.stop):
            generator.manual_seed(seeds[i])
            draws.append(posterior[i : i + 1].rsample_with_log_prob(k=k, generator=generator))
        z = torch.cat([d[0] for d in draws], dim=1)  # (k, n_pass, D)
        log_qz = torch.cat([d[1] for d in draws], dim=1)  # (k, n_pass)
        log_sum = torch.full((len(batch),), -math.inf, device=x.device, dtype=torch.float64)
        recon_sum, kl_sum = torch.zeros_like(log_sum), torch.zeros_like(log_sum)
        for offset in range(0, k, samples):
            z_chunk = z[offset : offset + samples]  # (samples, n_pass, D)
            q_chunk = log_qz[offset : offset + samples]
            terms = model.importance_terms(batch, z_chunk, batch_posterior, y=y, log_qz=q_chunk)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(terms.log_weights().double(), 0))
            recon_sum -= terms.log_px_z.double().sum(0)
            kl_chunk = model.kl(batch_posterior, z_chunk, y=prior_y, log_qz=q_chunk)
            kl_sum += kl_chunk.double() * len(z_chunk)
        log_px[part] = log_sum - math.log(k)
        recon[part] = recon_sum / k
        kl[part] = kl_sum / k
        bar.update(len(batch))
    return log_px, recon, kl
