"""MIG from the posterior (Chen et al. 2018's estimator) on cases whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vaelab.disentanglement import mig
from vaelab.disentanglement.mig_posterior import log_aggregate, mig_posterior
from vaelab.errors import VaelabError

SIZES = (3, 4, 5)
LOG_2PI_E = math.log(2 * math.pi * math.e)


def _grid(sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    """Every combination of factor values: (prod(sizes), F) int64."""
    return np.array(list(itertools.product(*map(range, sizes))), dtype=np.int64)


def _copied(factors: np.ndarray, noise: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (N, F + noise): latent k = factor k with variance e^-12, then prior noise."""
    n, f = factors.shape
    mu = np.concatenate([factors.astype(float), np.zeros((n, noise))], axis=1)
    logvar = np.concatenate([np.full((n, f), -12.0), np.zeros((n, noise))], axis=1)
    return mu, logvar


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary factor, 100 images each; latent 0 ~ N(+-1, 1) by value, latent 1 ~ N(0, 1)."""
    factors = np.repeat([0, 1], 100)[:, None]
    mu = np.stack([2.0 * factors[:, 0] - 1.0, np.zeros(200)], axis=1)
    return mu, np.zeros_like(mu), factors


def _two_gaussian_information(m: float) -> float:
    """I(z; v) for v uniform on {0, 1} and z | v ~ N(+-m, 1): h(mixture) - h(N(0, 1)), the
    mixture's differential entropy by the midpoint rule on a fine grid."""
    z, step = np.linspace(-m - 12, m + 12, 480_001, retstep=True)
    density = (
        0.5 * (np.exp(-0.5 * (z - m) ** 2) + np.exp(-0.5 * (z + m) ** 2)) / math.sqrt(2 * math.pi)
    )
    return float(-np.sum(density * np.log(density)) * step) - 0.5 * LOG_2PI_E


def test_log_aggregate_matches_a_direct_logsumexp():
    rng = np.random.default_rng(3)
    mu, logvar = rng.normal(size=(50, 3)) * 3, rng.uniform(-20, 5, size=(50, 3))
    z = mu[rng.integers(50, size=40)] + rng.normal(size=(40, 3))
    terms = -0.5 * ((z[:, None] - mu) ** 2 / np.exp(logvar) + logvar + math.log(2 * math.pi))
    expected = np.logaddexp.reduce(terms, axis=1) - math.log(50)  # (S, D)
    for chunk in (3, 7, 100, 2**21):  # a block smaller than one row of images, and larger
        np.testing.assert_allclose(log_aggregate(z, mu, logvar, chunk=chunk), expected, atol=1e-12)


def test_copied_latents_hold_the_factor_entropy_and_noise_holds_none():
    factors = _grid()
    mu, logvar = _copied(factors)
    result = mig_posterior(mu, logvar, factors, names=["a", "b", "c"])
    entropy = np.log(SIZES)
    np.testing.assert_allclose(result.factor_entropy, entropy)
    np.testing.assert_allclose(np.diag(result.mutual_info), entropy, atol=0.02)
    off_diagonal = result.mutual_info[:3][~np.eye(3, dtype=bool)]
    assert off_diagonal.max() < 0.01  # copied latents hold nothing about the other factors
    assert result.mutual_info[3:].max() < 0.01  # prior noise
    assert result.score > 0.97
    assert list(result.top_code) == [0, 1, 2]
    assert result.settings["samples"] == 10_000 and result.settings["N"] == 60
    assert result.settings["factor_sizes"] == {"a": 3, "b": 4, "c": 5}


def test_an_inactive_latent_is_uninformative_here_but_not_to_binned_means():
    factors = _grid()
    mu = np.zeros((len(factors), 3))
    mu[:, 0] = factors[:, 2] * 1e-3  # the means follow factor 2 over a tiny range...
    logvar = np.zeros_like(mu)  # ...while every posterior is about the prior N(0, 1)
    posterior = mig_posterior(mu, logvar, factors)
    binned = mig(mu, factors)
    # true I(z_0; v_2) is about Var(means) / 2 = 1e-6 nats
    assert posterior.mutual_info[0, 2] < 1e-3
    assert posterior.score < 1e-3
    assert binned.mutual_info[0, 2] == pytest.approx(math.log(5), abs=1e-12)
    assert binned.per_factor[2] == pytest.approx(1.0, abs=1e-12)


def test_two_gaussians_match_the_integrated_mutual_information(binary):
    mu, logvar, factors = binary
    exact = _two_gaussian_information(1.0)  # about 0.337 nats
    result = mig_posterior(mu, logvar, factors, samples=50_000)
    stderr = result.mutual_info_stderr[0, 0]
    assert stderr < 0.003
    assert result.mutual_info[0, 0] == pytest.approx(exact, abs=4 * stderr)
    assert result.mutual_info[1, 0] == pytest.approx(0.0, abs=1e-12)  # identical posteriors
    assert result.score == pytest.approx(result.mutual_info[0, 0] / math.log(2), abs=1e-12)


def test_same_seed_same_result_other_seeds_close(binary):
    mu, logvar, factors = binary
    first = mig_posterior(mu, logvar, factors, samples=4_000, seed=5)
    again = mig_posterior(mu, logvar, factors, samples=4_000, seed=5)
    other = mig_posterior(mu, logvar, factors, samples=4_000, seed=6)
    np.testing.assert_array_equal(first.mutual_info, again.mutual_info)
    assert first.score == again.score
    assert first.mutual_info[0, 0] != other.mutual_info[0, 0]
    spread = math.hypot(first.mutual_info_stderr[0, 0], other.mutual_info_stderr[0, 0])
    assert abs(first.mutual_info[0, 0] - other.mutual_info[0, 0]) < 4 * spread
    assert spread < 0.02


def test_row_order_does_not_matter(binary):
    mu, logvar, factors = binary
    logvar = logvar + np.linspace(-1, 0, len(mu))[:, None]  # posteriors all different
    order = np.random.default_rng(0).permutation(len(mu))
    first = mig_posterior(mu, logvar, factors, samples=2_000)
    shuffled = mig_posterior(mu[order], logvar[order], factors[order], samples=2_000)
    np.testing.assert_array_equal(first.mutual_info, shuffled.mutual_info)


def test_rare_factor_values_get_topped_up_draws():
    factors = np.zeros((200, 1), dtype=np.int64)
    factors[:2, 0] = 1  # 1% of images: about 1 of 100 shared draws
    mu = np.stack([factors[:, 0] * 10.0, np.zeros(200)], axis=1)
    logvar = np.zeros_like(mu)
    result = mig_posterior(mu, logvar, factors, samples=100)
    assert result.settings["draws"] > 100
    entropy = -(0.01 * math.log(0.01) + 0.99 * math.log(0.99))
    assert result.mutual_info[0, 0] == pytest.approx(entropy, rel=0.05)  # separated by 10 sd


@pytest.mark.parametrize(
    ("mu", "logvar", "factors", "message"),
    [
        (np.zeros((10, 2)), np.zeros((10, 3)), np.arange(10)[:, None] % 2, "one shape"),
        (np.zeros(10), np.zeros(10), np.arange(10)[:, None] % 2, "2-D"),
        (np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((9, 1), dtype=int), "for 10 posteriors"),
        (np.zeros((10, 1)), np.zeros((10, 1)), np.arange(10)[:, None] % 2, "at least 2 latents"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), np.arange(10)[:, None] % 2, "mu contains"),
        (np.zeros((10, 2)), np.full((10, 2), np.inf), np.arange(10)[:, None] % 2, "logvar cont"),
        (np.zeros((10, 2)), np.full((10, 2), -300.0), np.arange(10)[:, None] % 2, "lie in"),
        (np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((10, 1)), "integer"),
        (np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((10, 1), dtype=int), "single value"),
        (
            np.zeros((10, 2)),
            np.zeros((10, 2)),
            np.zeros((10, 0), dtype=int),
            "1 factor, got 2 and 0",
        ),
    ],
)
def test_bad_input_raises_one_line(mu, logvar, factors, message):
    with pytest.raises(VaelabError, match=message) as caught:
        mig_posterior(mu, logvar, factors)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("MIG (posterior): ")


def test_bad_settings_raise(binary):
    mu, logvar, factors = binary
    with pytest.raises(VaelabError, match="samples must be at least 2"):
        mig_posterior(mu, logvar, factors, samples=1)
    with pytest.raises(VaelabError, match="chunk must hold"):
        mig_posterior(mu, logvar, factors, chunk=1)
