"""Posteriors, the prior and likelihoods: each closed form checked against torch or a Monte-Carlo
estimate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from vaelab.errors import VaelabError
from vaelab.models.distributions import DiagonalGaussian, PointMass
from vaelab.models.likelihoods import BernoulliLikelihood, GaussianLikelihood, build_likelihood
from vaelab.models.priors import StandardNormalPrior

PRIOR = StandardNormalPrior(3)


def gaussian(b: int = 4, d: int = 3, seed: int = 0) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(b, d, generator=g, dtype=torch.float64).clamp(-2, 2)
    return DiagonalGaussian(mu, logvar)


# --- DiagonalGaussian ------------------------------------------------------------------------


def test_kl_closed_form_matches_monte_carlo():
    q = gaussian()
    n = 200_000
    z = q.sample(k=n, generator=torch.Generator().manual_seed(1))  # (K, B, D)
    log_ratio = q.log_prob(z) - PRIOR.log_prob(z)  # (K, B): KL = E_q[log q - log p]
    estimate = log_ratio.mean(0)
    std_error = log_ratio.std(0) / math.sqrt(n)
    # Five standard errors: a correct formula fails this with probability < 1e-6 per example;
    # the per-example KLs here are O(1) and the errors O(0.005), so a wrong term would show.
    kl = PRIOR.kl(q)
    assert torch.all((kl - estimate).abs() < 5 * std_error), (kl, estimate, std_error)
    assert kl.shape == (4,)
    torch.testing.assert_close(PRIOR.kl_per_dim(q).sum(-1), kl)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    prior = DiagonalGaussian(torch.zeros(2, 5), torch.zeros(2, 5))
    torch.testing.assert_close(StandardNormalPrior(5).kl(prior), torch.zeros(2))
    assert torch.all(PRIOR.kl(gaussian()) > 0)


def test_the_prior_has_no_closed_form_kl_to_a_point_mass():
    assert PRIOR.kl(PointMass(torch.zeros(2, 3))) is None


def test_log_prob_matches_torch_normal():
    q = gaussian()
    reference = Normal(q.mu, q.std)
    z = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z).sum(-1))
    zk = torch.randn(7, 4, 3, dtype=torch.float64)  # K importance samples
    torch.testing.assert_close(q.log_prob(zk), reference.log_prob(zk).sum(-1))
    assert q.log_prob(zk).shape == (7, 4)


def test_standard_normal_prior_log_prob_matches_torch():
    z = torch.randn(7, 6, 5, dtype=torch.float64)  # (K, B, D)
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(StandardNormalPrior(5).log_prob(z), expected)


def test_standard_normal_prior_samples():
    prior = StandardNormalPrior(4)
    a = prior.sample(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = prior.sample(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert a.shape == (50_000, 4) and a.dtype == torch.float64
    assert torch.equal(a, b)
    torch.testing.assert_close(a.mean(0), torch.zeros(4, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(a.std(0), torch.ones(4, dtype=torch.float64), atol=0.03, rtol=0)
    assert list(prior.state_dict()) == []  # old checkpoints load into models that have one


def test_entropy_matches_torch_normal():
    q = gaussian()
    torch.testing.assert_close(q.entropy(), Normal(q.mu, q.std).entropy().sum(-1))


def test_indexing_selects_examples():
    q = gaussian()
    part = q[1:3]
    assert len(part) == 2
    torch.testing.assert_close(part.mu, q.mu[1:3])
    torch.testing.assert_close(part.logvar, q.logvar[1:3])


def test_sample_shapes_and_moments():
    q = gaussian()
    assert q.sample().shape == (4, 3)
    z = q.sample(k=100_000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (100_000, 4, 3)
    torch.testing.assert_close(z.mean(0), q.mu, atol=0.03, rtol=0)  # 5 sigma: std <= e, /316
    torch.testing.assert_close(z.std(0), q.std, atol=0.03, rtol=0)


def test_sample_is_reproducible_with_a_generator():
    q = gaussian()
    a = q.sample(generator=torch.Generator().manual_seed(5))
    b = q.sample(generator=torch.Generator().manual_seed(5))
    c = q.sample(generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gradients_flow_through_the_reparameterisation():
    mu = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z = DiagonalGaussian(mu, logvar).rsample(generator=torch.Generator().manual_seed(0))
    z.sum().backward()
    # z = mu + exp(logvar / 2) * eps  =>  dz/dmu = 1,  dz/dlogvar = exp(logvar / 2) * eps / 2
    eps = (z.detach() - mu.detach()) / torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)
    assert torch.all(logvar.grad != 0)


def test_sample_has_no_gradient_and_equals_rsample():
    mu = torch.randn(4, 3, requires_grad=True)
    q = DiagonalGaussian(mu, torch.zeros(4, 3))
    drawn = q.sample(generator=torch.Generator().manual_seed(0))
    assert not drawn.requires_grad
    torch.testing.assert_close(drawn, q.rsample(generator=torch.Generator().manual_seed(0)))


def test_mean_and_mode_are_mu():
    q = gaussian()
    assert q.mean is q.mu
    assert q.mode() is q.mu
    torch.testing.assert_close(q.std, torch.exp(0.5 * q.logvar))


def test_point_mass():
    z = torch.randn(4, 3)
    p = PointMass(z)
    assert p.mean is z
    assert p.mode() is z
    assert p.sample() is z
    assert p.sample(k=5).shape == (5, 4, 3)
    assert torch.equal(p.sample(k=5)[2], z)


# --- likelihoods -----------------------------------------------------------------------------


def test_bernoulli_nll_is_summed_binary_cross_entropy():
    logits = torch.randn(5, 1, 4, 6, dtype=torch.float64)
    x = torch.rand(5, 1, 4, 6, dtype=torch.float64)
    expected = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum((1, 2, 3))
    nll = BernoulliLikelihood().nll(logits, x)
    assert nll.shape == (5,)
    torch.testing.assert_close(nll, expected)


def test_bernoulli_nll_is_finite_for_extreme_logits():
    logits = torch.tensor([[-200.0, 200.0]]).view(1, 1, 1, 2)
    nll = BernoulliLikelihood().nll(logits, torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2))
    assert torch.isfinite(nll).all()
    torch.testing.assert_close(nll, torch.tensor([400.0]))


@pytest.mark.parametrize(
    "likelihood", [BernoulliLikelihood(), GaussianLikelihood(0.7)], ids=["bernoulli", "gaussian"]
)
def test_log_prob_broadcasts_over_leading_sample_dimensions(likelihood):
    x_params = torch.randn(7, 5, 1, 4, 6)  # (K, B, C, H, W)
    x = torch.rand(5, 1, 4, 6)
    log_p = likelihood.log_prob(x_params, x)
    assert log_p.shape == (7, 5)
    for k in range(7):
        torch.testing.assert_close(log_p[k], likelihood.log_prob(x_params[k], x))
    torch.testing.assert_close(likelihood.nll(x_params, x), -log_p)


def test_log_prob_is_float32_under_bfloat16_autocast():
    x_params = torch.randn(3, 1, 4, 4, dtype=torch.bfloat16)
    x = torch.rand(3, 1, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for likelihood in (BernoulliLikelihood(), GaussianLikelihood(0.5)):
            assert likelihood.log_prob(x_params, x).dtype == torch.float32


@pytest.mark.parametrize("sigma", [0.1, 1.0, 2.5])
def test_gaussian_nll_matches_torch_normal(sigma):
    mean = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    likelihood = GaussianLikelihood(sigma).double()
    expected = -Normal(mean, sigma).log_prob(x).sum((1, 2, 3))
    nll = likelihood.nll(mean, x)
    assert nll.shape == (5,)
    torch.testing.assert_close(nll, expected)


def test_gaussian_sigma_learned_is_a_parameter_and_fixed_is_not():
    learned = GaussianLikelihood(None)
    assert isinstance(learned.log_sigma, torch.nn.Parameter)
    assert [name for name, _ in learned.named_parameters()] == ["log_sigma"]
    assert float(learned.log_sigma.detach()) == 0.0  # starts at sigma = 1
    fixed = GaussianLikelihood(0.5)
    assert not isinstance(fixed.log_sigma, torch.nn.Parameter)
    assert list(fixed.parameters()) == []
    assert "log_sigma" in fixed.state_dict()  # a buffer: saved with the weights
    torch.testing.assert_close(float(fixed.log_sigma), math.log(0.5))


def test_learned_sigma_nll_matches_torch_and_gets_a_gradient():
    likelihood = GaussianLikelihood(None)
    with torch.no_grad():
        likelihood.log_sigma.fill_(math.log(0.3))
    mean, x = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    nll = likelihood.nll(mean, x)
    torch.testing.assert_close(nll, -Normal(mean, 0.3).log_prob(x).sum((1, 2, 3)))
    nll.sum().backward()
    assert likelihood.log_sigma.grad is not None and likelihood.log_sigma.grad != 0


def test_likelihood_means():
    logits = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(BernoulliLikelihood().mean(logits), torch.sigmoid(logits))
    assert GaussianLikelihood(1.0).mean(logits) is logits


def test_build_likelihood():
    assert isinstance(build_likelihood("bernoulli", sigma=None), BernoulliLikelihood)
    assert isinstance(build_likelihood("gaussian", sigma=None).log_sigma, torch.nn.Parameter)
    assert not isinstance(build_likelihood("gaussian", sigma=0.2).log_sigma, torch.nn.Parameter)


@pytest.mark.parametrize(
    "bad", [[-0.1, 0.5], [0.5, 1.5], [float("nan"), 0.5]], ids=["below", "above", "nan"]
)
def test_bernoulli_check_data_rejects_values_outside_unit_interval(bad):
    with pytest.raises(VaelabError, match="training data"):
        BernoulliLikelihood().check_data(torch.tensor(bad), where="training data")


def test_bernoulli_check_data_accepts_the_unit_interval():
    BernoulliLikelihood().check_data(torch.tensor([0.0, 0.3, 1.0]), where="data")
    GaussianLikelihood(None).check_data(torch.tensor([-5.0, 7.0]), where="data")
