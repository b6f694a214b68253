"""Latent samplers: the prior, a Gaussian mixture fitted to codes, and the code box."""

from __future__ import annotations

import pytest
import torch

from vaelab import VaelabError, build_model
from vaelab.analysis.samplers import (
    SAMPLERS,
    BoxSampler,
    GaussianMixtureSampler,
    PriorSampler,
    fit_sampler,
    make_sampler,
)
from vaelab.models import ModelConfig


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered_codes(n: int = 3000) -> torch.Tensor:
    """Three well-separated, differently shaped clusters in 2-D: (n, 2)."""
    generator = _generator(1)
    centres = torch.tensor([[-6.0, 0.0], [0.0, 5.0], [6.0, -2.0]])
    scales = torch.tensor([[1.0, 0.2], [0.3, 0.3], [0.5, 1.5]])
    k = torch.arange(n) % 3
    return centres[k] + scales[k] * torch.randn(n, 2, generator=generator)


def _model(kind: str = "ae") -> torch.nn.Module:
    config = ModelConfig(model=kind, data_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,))
    return build_model(config).eval()


def test_prior_draws_standard_normal_codes_of_the_fitted_size():
    sampler = PriorSampler().fit(torch.zeros(0, 4))
    z = sampler.sample(20000, generator=_generator())
    assert z.shape == (20000, 4) and z.dtype == torch.float32
    assert z.mean(dim=0).abs().max() < 0.05
    assert (z.std(dim=0) - 1).abs().max() < 0.05
    assert torch.equal(z, sampler.sample(20000, generator=_generator()))


def test_box_sampler_stays_in_the_box_and_fills_it():
    codes = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 0.0]])
    z = BoxSampler().fit(codes).sample(5000, generator=_generator())
    assert (z[:, 0] >= 0).all() and (z[:, 0] <= 2).all()
    assert (z[:, 1] >= -1).all() and (z[:, 1] <= 3).all()
    assert z[:, 0].min() < 0.05 and z[:, 1].max() > 2.9


def test_gmm_reproduces_the_mean_and_covariance_of_clustered_codes():
    codes = _clustered_codes()
    z = (
        GaussianMixtureSampler(components=3, seed=0)
        .fit(codes)
        .sample(30000, generator=_generator())
    )
    assert torch.allclose(z.mean(dim=0), codes.mean(dim=0), atol=0.1)
    assert torch.allclose(torch.cov(z.T), torch.cov(codes.T), rtol=0.05, atol=0.1)
    # ... and each sample lies near one of the clusters, not between them.
    assert (z[:, 0].abs() < 2.5).logical_and(z[:, 1] < 2).float().mean() < 0.01


def test_gmm_is_deterministic_given_seeds():
    codes = _clustered_codes(600)
    first = GaussianMixtureSampler(components=3, seed=4).fit(codes)
    second = GaussianMixtureSampler(components=3, seed=4).fit(codes)
    assert torch.equal(first.means, second.means)
    a = first.sample(100, generator=_generator(7))
    assert torch.equal(a, second.sample(100, generator=_generator(7)))
    assert not torch.equal(a, first.sample(100, generator=_generator(8)))


def test_gmm_with_more_components_than_codes_still_fits():
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    z = GaussianMixtureSampler(components=10).fit(codes).sample(5, generator=_generator())
    assert z.shape == (5, 2) and torch.isfinite(z).all()


def test_unfitted_samplers_and_bad_codes_fail_loudly():
    for sampler in (PriorSampler(), BoxSampler(), GaussianMixtureSampler()):
        with pytest.raises(VaelabError, match="fit"):
            sampler.sample(3)
    with pytest.raises(VaelabError, match="at least 2"):
        GaussianMixtureSampler().fit(torch.zeros(1, 2))
    with pytest.raises(VaelabError):
        GaussianMixtureSampler(components=0)
    with pytest.raises(VaelabError, match=r"\(N, D\)"):
        BoxSampler().fit(torch.zeros(5))


def test_registry_and_fit_sampler(batch):
    assert set(SAMPLERS) == {"prior", "gmm"}
    model = _model()
    prior = fit_sampler("prior", model)  # nothing to encode
    assert prior.sample(4, generator=_generator()).shape == (4, 3)
    gmm = fit_sampler("gmm", model, batch, seed=0)
    z = gmm.sample(6, generator=_generator())
    assert z.shape == (6, 3)
    assert model.decode(z).shape == (6, 1, 8, 8)
    with pytest.raises(VaelabError, match="training images"):
        fit_sampler("gmm", model)
    with pytest.raises(VaelabError, match="unknown sampler 'flow'"):
        make_sampler("flow")
