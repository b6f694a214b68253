"""`vaelab.evaluate`: the importance-weighted NLL against a model whose log p(x) is known in
closed form, the bound ordering of Burda et al. (2015), active units and KL per dimension."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import vaelab
from vaelab import ModelConfig, build_model
from vaelab.analysis.evaluate import evaluate
from vaelab.models.bounds import log_mean_exp

SIGMA = 0.5
# Orthogonal columns: W^T W is diagonal, so the exact posterior is a diagonal Gaussian.
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]])
B = torch.tensor([0.3, -0.2, 0.1, 0.5])


def linear_gaussian_vae(*, exact_posterior: bool) -> vaelab.VAE:
    """z ~ N(0, I), x | z ~ N(W z + b, SIGMA^2 I): p(x) = N(b, W W^T + SIGMA^2 I).

    The encoder is linear; with `exact_posterior` it is the true p(z|x), else a deliberately
    wrong one (shifted, shrunk and too wide), so that the bounds have gaps to close.
    """
    config = ModelConfig(
        model="vae",
        data_shape=(1, 1, 4),
        latent_dim=2,
        hidden_dims=(),
        likelihood="gaussian",
        sigma=SIGMA,
    )
    model = build_model(config)
    precision = torch.eye(2) + W.T @ W / SIGMA**2
    covariance = torch.linalg.inv(precision)  # diagonal, by the choice of W
    gain = covariance @ W.T / SIGMA**2  # mu = gain (x - b)
    logvar = torch.log(torch.diagonal(covariance))
    if not exact_posterior:
        gain, logvar = 0.8 * gain, logvar + 0.7
    encoder, decoder = model.encoder.net[0], model.decoder.net[0]
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(B)
        encoder.weight.zero_()
        encoder.weight[:2] = gain
        encoder.bias[:2] = -gain @ B + (0.0 if exact_posterior else 0.2)
        encoder.bias[2:] = logvar
    return model.eval()


def true_log_px(x: torch.Tensor) -> torch.Tensor:
    marginal = torch.distributions.MultivariateNormal(B, W @ W.T + SIGMA**2 * torch.eye(4))
    return marginal.log_prob(x.flatten(1))


def marginal_samples(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator)
    return (z @ W.T + B + SIGMA * torch.randn(n, 4, generator=generator)).view(n, 1, 1, 4)


def test_exact_posterior_gives_log_px_at_every_k() -> None:
    """With q(z|x) = p(z|x) every weight is p(x): the estimate is exact, even at k = 1; the
    ELBO (reconstruction by Monte Carlo, KL in closed form) equals it up to sampling error."""
    model, x = linear_gaussian_vae(exact_posterior=True), marginal_samples(50)
    expected = -true_log_px(x).mean().item()
    for k in (1, 7, 100):
        assert evaluate(model, x, k=k).nll == pytest.approx(expected, abs=1e-4)
    assert evaluate(model, x, k=4000).neg_elbo == pytest.approx(expected, abs=0.01)


def test_estimate_converges_to_log_px_as_k_grows() -> None:
    model, x = linear_gaussian_vae(exact_posterior=False), marginal_samples(200)
    log_px = true_log_px(x).mean().item()
    results = {k: evaluate(model, x, k=k, seed=1) for k in (1, 10, 100, 1000, 10000)}
    gaps = {k: -r.nll - log_px for k, r in results.items()}  # bound - log p(x): < 0, -> 0
    assert gaps[1] < -1.0  # the wrong posterior leaves a real gap at k = 1
    assert gaps[1] < gaps[10] < -0.05  # it closes as k grows ...
    for k in (100, 1000, 10000):  # ... down to the Monte Carlo error of 200 examples
        assert abs(gaps[k]) < 0.02


def test_elbo_below_iwae_bounds_below_log_px() -> None:
    """On average: ELBO <= IWAE(k) <= IWAE(k') <= log p(x) for k < k' (Burda et al., thm 1)."""
    model, x = linear_gaussian_vae(exact_posterior=False), marginal_samples(300, seed=3)
    log_px = true_log_px(x).mean().item()
    elbo = -evaluate(model, x, k=2000).neg_elbo
    iwae = [-evaluate(model, x, k=k, seed=2).nll for k in (2, 20, 200)]
    assert elbo < iwae[0] < iwae[1] < iwae[2] < log_px
    analytic_elbo_gap = elbo - log_px  # = -E_x KL(q(z|x) || p(z|x)) < 0
    assert analytic_elbo_gap < -0.5


def test_results_do_not_depend_on_the_chunk_and_follow_the_seed() -> None:
    model, x = linear_gaussian_vae(exact_posterior=False), marginal_samples(37)
    runs = [evaluate(model, x, k=300, chunk=chunk, seed=5) for chunk in (64, 300, 1000, 20000)]
    assert all(r.nll == pytest.approx(runs[0].nll, abs=1e-9) for r in runs)
    assert all(r.neg_elbo == pytest.approx(runs[0].neg_elbo, abs=1e-9) for r in runs)
    other_seed = evaluate(model, x, k=300, seed=6)
    assert other_seed.nll != runs[0].nll


def with_objective(model: vaelab.VAE, objective: str, k: int) -> vaelab.VAE:
    """The same weights, trained-for objective and k changed."""
    other = build_model(replace(model.config, objective=objective, k=k))
    other.load_state_dict(model.state_dict())
    return other


def test_k1_iwae_weights_average_to_the_elbo() -> None:
    """The k = 1 bound is the ELBO: its Monte Carlo log weights average to -(recon + KL)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 4, 4), latent_dim=3, hidden_dims=(16,)))
    x = torch.rand(6, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        posterior = model.encode(x)
        z = posterior.rsample(k=200_000, generator=generator)  # (K, B, D)
        terms = model.importance_terms(x, z, posterior)
        log_w = terms.log_weights()
        mc_elbo = log_w.mean(0)
        elbo = terms.log_px_z.mean(0) - model.prior.kl(posterior)
        assert torch.allclose(mc_elbo, elbo, atol=0.02)
        assert torch.allclose(log_mean_exp(log_w[:1]), log_w[0])
        drawn = model.log_weights(x, 200_000, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(drawn, log_w)  # the public method: the same draws


def test_iwae_loss_is_tighter_and_trains() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 4, 4), latent_dim=3, hidden_dims=(16,)))
    x = torch.rand(64, 1, 4, 4)
    elbo = with_objective(model, "elbo", 50).loss(x, generator=torch.Generator().manual_seed(1))
    model = with_objective(model, "iwae", 50)
    iwae = model.loss(x, generator=torch.Generator().manual_seed(1))
    assert iwae.total < elbo.total  # a tighter bound: the loss (its negative) is lower
    assert iwae.recon.item() == pytest.approx(elbo.recon.item()) and iwae.kl == elbo.kl
    iwae.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_k1_iwae_loss_is_the_vae_loss() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 4, 4), latent_dim=3, hidden_dims=(16,)))
    x = torch.rand(8, 1, 4, 4)
    vae = model.loss(x, generator=torch.Generator().manual_seed(3))
    iwae = with_objective(model, "iwae", 1).loss(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(vae.total, iwae.total)


def test_active_units_and_kl_per_dimension() -> None:
    """A unit whose mean ignores x is inactive; KL per dimension sums to the KL."""
    model, x = linear_gaussian_vae(exact_posterior=True), marginal_samples(500)
    with torch.no_grad():
        model.encoder.net[0].weight[1] = 0.0  # z_2's mean no longer depends on x
    result = evaluate(model, x, k=10)
    assert result.active_units == 1 and result.latent_dim == 2
    assert result.mean_variance_per_dim[1] < 1e-12 < 0.01 < result.mean_variance_per_dim[0]
    assert sum(result.kl_per_dim) == pytest.approx(result.kl, rel=1e-6)
    assert result.neg_elbo == pytest.approx(result.recon + result.kl)


def test_binarize_is_a_fixed_draw() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,)))
    x = torch.full((20, 1, 4, 4), 0.5)
    first = evaluate(model, x, k=5, binarize=True, seed=4)
    again = evaluate(model, x, k=5, binarize=True, seed=4)
    soft = evaluate(model, x, k=5, seed=4)
    assert first.binarized and first.nll == again.nll and first.nll != soft.nll


def test_autoencoder_reports_what_applies() -> None:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(model="ae", data_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,))
    )
    x = torch.rand(10, 1, 4, 4)
    result = evaluate(model, x)
    with torch.no_grad():
        x_hat = model.reconstruct(x)
        recon = model.likelihood.nll(model.decode_params(model.encode(x).mode(), x), x).mean()
    assert result.mse == pytest.approx(float((x_hat - x).pow(2).mean()), rel=1e-5)
    assert result.recon == pytest.approx(float(recon), rel=1e-5)
    assert result.nll is None and result.active_units is None and result.kl is None


def test_bad_arguments_are_one_line_errors() -> None:
    model = linear_gaussian_vae(exact_posterior=True)
    with pytest.raises(vaelab.VaelabError, match="k and chunk must be positive"):
        evaluate(model, marginal_samples(3), k=0)
    with pytest.raises(vaelab.VaelabError, match="no examples"):
        evaluate(model, marginal_samples(3)[:0])
    bernoulli = build_model(ModelConfig(data_shape=(1, 2, 2), latent_dim=2, hidden_dims=(4,)))
    with pytest.raises(vaelab.VaelabError, match=r"needs data in \[0, 1\]"):
        evaluate(bernoulli, torch.full((2, 1, 2, 2), 3.0))


def test_evaluate_is_exported_and_restores_training_mode() -> None:
    model = linear_gaussian_vae(exact_posterior=True).train()
    result = vaelab.evaluate(model, marginal_samples(4), k=3)
    assert model.training and math.isfinite(result.nll)
