"""The mutual information gap, MIG, as Chen et al. (2018, "Isolating Sources of Disentanglement
in Variational Autoencoders", sec. 5 and appendix) estimate it: from the Gaussian posterior
q(z|x) of every image, not from binned posterior means as `vaelab.disentanglement.mig` does.

The two disagree most on a nearly inactive latent, q(z_j|x) ~ N(0, 1) with a tiny spread of
means: it carries almost no information about any factor under this estimator, while the means
binned over their own tiny range can look perfectly informative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vaelab.disentanglement.inputs import FactorData, check_inputs
from vaelab.disentanglement.mig import normalised_gaps
from vaelab.disentanglement.mutual_info import factor_entropies
from vaelab.errors import VaelabError, plural

METRIC = "MIG (posterior)"
LOGVAR_LIMIT = 100.0  # |logvar| beyond this is a broken encoder, and exp(-logvar) loses meaning
MIN_DRAWS = 20  # draws per factor value at least, topped up where the shared draws have fewer
LOG_2PI = math.log(2 * math.pi)

DEFINITION = (
    "MIG (Chen et al. 2018, sec. 5), their estimator from the Gaussian posteriors q(z|x): "
    "I(z_j; v_k) = H(z_j) - H(z_j | v_k) with q(z_j) = mean over images of q(z_j|x) and "
    "q(z_j | v_k = v) the same mean over the images with v_k = v, estimated by Monte Carlo as "
    "E[log q(z_j | v_k) - log q(z_j)] over draws z ~ q(z|x) of uniformly drawn images, each "
    "density summed exactly over its images; clipped at 0, divided by the plug-in H(v_k), nats; "
    "MIG = mean over factors of the gap between the largest and second-largest. Unlike `mig`, "
    "which bins the posterior means into equal-width bins over each latent's own range, a latent "
    "whose posteriors all stay near the prior N(0, 1) holds almost no information here, even "
    "where its means, binned over their own tiny range, look informative."
)


@dataclass(frozen=True, eq=False)
class PosteriorMIGResult:
    """MIG from the posterior and the quantities it is made of."""

    score: float  # mean of per_factor, about [0, 1] (Monte Carlo error can cross 1 slightly)
    per_factor: np.ndarray  # (F,) normalised gap
    mutual_info: np.ndarray  # (D, F) I(z_j; v_k), nats, clipped at 0
    mutual_info_stderr: np.ndarray  # (D, F) Monte Carlo standard error of the unclipped estimate
    factor_entropy: np.ndarray  # (F,) H(v_k), nats
    top_code: np.ndarray  # (F,) the latent j with the largest I(z_j; v_k)
    definition: str = DEFINITION
    settings: dict[str, object] = field(default_factory=dict)


def mig_posterior(
    mu: ArrayLike,
    logvar: ArrayLike,
    factors: ArrayLike,
    *,
    names: Sequence[str] | None = None,
    samples: int = 10_000,
    seed: int = 0,
    chunk: int = 2**21,
) -> PosteriorMIGResult:
    """MIG of the posteriors N(`mu`, exp(`logvar`)) (N, D) against integer `factors` (N, F).

    `samples` images are drawn uniformly (with replacement, from `seed`) and one z ~ q(z|x) from
    each; every draw scores log q(z_j) against all N images and log q(z_j | v_k) against the
    images sharing its value of v_k, so I(z_j; v_k) = sum_v p(v) mean[log q(z_j|v) - log q(z_j)]
    over the draws with v_k = v (Chen et al. 2018, sec. 5: I = H(z_j) - H(z_j | v_k)).
    The paired difference has far less Monte Carlo noise than two independent entropy estimates.
    `chunk` bounds the floats held in one block of densities (draws x images x latents).
    """
    data, mu, logvar = _checked(mu, logvar, factors, names)
    if samples < 2:
        raise VaelabError(f"{METRIC}: samples must be at least 2, got {samples}")
    if chunk < mu.shape[1]:
        raise VaelabError(
            f"{METRIC}: chunk must hold at least one value per latent ({mu.shape[1]}), got {chunk}"
        )
    rows, owner = _draw_images(data, samples, np.random.default_rng(seed))
    eps = np.random.default_rng([seed, 1]).standard_normal((len(rows), mu.shape[1]))  # (T, D)
    z = mu[rows] + np.exp(0.5 * logvar[rows]) * eps  # (T, D), z ~ q(z | x_rows)
    info, stderr = _information(data, mu, logvar, z, rows, owner, chunk)  # (D, F) each
    info = np.maximum(info, 0.0)
    entropy = factor_entropies(data.labels)  # (F,), > 0: every factor has two values
    per_factor = normalised_gaps(info, entropy)
    return PosteriorMIGResult(
        score=float(np.mean(per_factor)),
        per_factor=per_factor,
        mutual_info=info,
        mutual_info_stderr=stderr,
        factor_entropy=entropy,
        top_code=np.argmax(info, axis=0),
        settings={
            "samples": samples,
            "seed": seed,
            "N": data.n,
            "draws": len(rows),  # samples plus the top-ups of rare factor values
            "min_draws_per_value": MIN_DRAWS,
            "chunk": chunk,
            "factor_sizes": dict(zip(data.names, data.sizes, strict=True)),
        },
    )


def log_aggregate(
    z: np.ndarray, mu: np.ndarray, logvar: np.ndarray, *, chunk: int = 2**21
) -> np.ndarray:
    """log q(z_sj) = log (1/M) sum_n N(z_sj; mu_nj, exp(logvar_nj)) for draws `z` (S, D) under
    the aggregate of M posteriors `mu`, `logvar` (M, D): (S, D), in blocks of at most `chunk`
    floats (at least D).

    N(z; mu, s^2) = w exp(a (z - mu)^2) exp(-(low + log 2 pi) / 2) with a = -1 / (2 s^2),
    w = exp(-(logvar - low) / 2) in (0, 1] and low the smallest logvar of the latent: no term
    overflows, and when z was drawn from one of these posteriors its own term keeps the sum
    well above 0 (for |logvar| <= LOGVAR_LIMIT), so no running maximum is needed.
    """
    (s_total, d), m_total = z.shape, len(mu)
    low = logvar.min(axis=0)  # (D,)
    weight = np.exp(-0.5 * (logvar - low)).T.copy()  # (D, M)
    scale = (-0.5 * np.exp(-logvar)).T.copy()  # (D, M)
    centre, draws = mu.T.copy(), z.T.copy()  # (D, M), (D, S)
    m_block = min(m_total, max(1, chunk // d))
    s_block = max(1, chunk // (d * m_block))
    buffer = np.empty(d * s_block * m_block)
    total = np.zeros((d, s_total))  # (D, S) sum_n w exp(a (z - mu)^2)
    for s0 in range(0, s_total, s_block):
        s = slice(s0, min(s_total, s0 + s_block))
        for m0 in range(0, m_total, m_block):
            m = slice(m0, min(m_total, m0 + m_block))
            shape = (d, s.stop - s.start, m.stop - m.start)
            block = buffer[: math.prod(shape)].reshape(shape)  # (D, S_c, M_c)
            np.subtract(draws[:, s, None], centre[:, None, m], out=block)
            np.square(block, out=block)
            block *= scale[:, None, m]
            np.exp(block, out=block)
            total[:, s] += np.einsum("dsm,dm->ds", block, weight[:, m])
    return (np.log(total) - 0.5 * (low[:, None] + LOG_2PI) - math.log(m_total)).T


def _information(
    data: FactorData,
    mu: np.ndarray,
    logvar: np.ndarray,
    z: np.ndarray,
    rows: np.ndarray,
    owner: np.ndarray,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """I(z_j; v_k) = sum_v p(v) E[log q(z_j | v_k = v) - log q(z_j)] over the draws `z` (T, D)
    from images `rows` (T,) that count for factor k (owner -1 or k) and have v_k = v, and its
    standard error: (D, F) each. One pass over all N images, then one per factor value."""
    log_q = log_aggregate(z, mu, logvar, chunk=chunk)  # (T, D) log q(z_j), all N images
    info = np.zeros((mu.shape[1], len(data.sizes)))  # (D, F)
    variance = np.zeros_like(info)
    for k, size in enumerate(data.sizes):
        for v in range(size):
            images = np.flatnonzero(data.labels[:, k] == v)
            mine = ((owner == -1) | (owner == k)) & (data.labels[rows, k] == v)
            gain = log_aggregate(z[mine], mu[images], logvar[images], chunk=chunk) - log_q[mine]
            p = len(images) / data.n  # empirical p(v); post-stratified over the values
            info[:, k] += p * gain.mean(axis=0)
            variance[:, k] += p**2 * gain.var(axis=0, ddof=1) / len(gain)
    return info, np.sqrt(variance)


def _draw_images(
    data: FactorData, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image rows (T,) to draw z from and their owner (T,): -1 for the `samples` shared draws
    (uniform over all images), k for the top-ups that give every value of factor k at least
    MIN_DRAWS draws (uniform over that value's images, used for factor k only)."""
    rows = [rng.integers(data.n, size=samples)]
    owner = [np.full(samples, -1)]
    for k, size in enumerate(data.sizes):
        counts = np.bincount(data.labels[rows[0], k], minlength=size)
        for v in np.flatnonzero(counts < MIN_DRAWS):
            images = np.flatnonzero(data.labels[:, k] == v)
            rows.append(rng.choice(images, size=MIN_DRAWS - counts[v]))
            owner.append(np.full(MIN_DRAWS - counts[v], k))
    return np.concatenate(rows), np.concatenate(owner)


def _checked(
    mu: ArrayLike, logvar: ArrayLike, factors: ArrayLike, names: Sequence[str] | None
) -> tuple[FactorData, np.ndarray, np.ndarray]:
    """Validated (data, mu, logvar), rows in canonical order; VaelabError on bad input."""
    mu, logvar, factors = np.asarray(mu), np.asarray(logvar), np.asarray(factors)
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise VaelabError(
            f"{METRIC}: mu and logvar must be 2-D arrays (N, D) of one shape, got {mu.shape} "
            f"and {logvar.shape}"
        )
    if factors.ndim != 2 or len(factors) != len(mu):
        raise VaelabError(
            f"{METRIC}: factors must be (N, F) with one row per posterior, got {factors.shape} "
            f"for {plural(len(mu), 'posterior')}"
        )
    if mu.shape[1] < 2 or factors.shape[1] < 1:
        raise VaelabError(
            f"{METRIC}: needs at least 2 latents and 1 factor, got {mu.shape[1]} and "
            f"{factors.shape[1]}"
        )
    for name, array in (("mu", mu), ("logvar", logvar)):
        if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(
            array.dtype, np.integer
        ):
            raise VaelabError(f"{METRIC}: {name} must be real numbers, got dtype {array.dtype}")
        bad = ~np.isfinite(array)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise VaelabError(
                f"{METRIC}: {name} contains {plural(int(bad.sum()), 'NaN or infinite value')} "
                f"(first at row {row}, latent {col}); check the encoder's output"
            )
    if np.abs(logvar).max() > LOGVAR_LIMIT:
        raise VaelabError(
            f"{METRIC}: logvar must lie in [-{LOGVAR_LIMIT:g}, {LOGVAR_LIMIT:g}], got values from "
            f"{logvar.min():g} to {logvar.max():g}; check the encoder's output"
        )
    d = mu.shape[1]
    # check_inputs validates the factors and sorts the rows canonically, mu and logvar together
    data = check_inputs(np.concatenate([mu, logvar], axis=1), factors, metric=METRIC, names=names)
    return data, data.codes[:, :d], data.codes[:, d:]
