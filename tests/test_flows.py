"""Flow posteriors (models/flows.py): densities where they are known in closed form, log
determinants against autograd Jacobians, the IAF's autoregressive structure, the planar
constraint, and a flow VAE's bound, training, checkpoint and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from vaelab import RunConfig, VaelabError
from vaelab.analysis.evaluate import evaluate, image_seed
from vaelab.models import ModelConfig, build_model
from vaelab.models.bounds import log_mean_exp
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.flows import (
    FORGET_BIAS,
    Flow,
    FlowPosterior,
    InverseAutoregressiveFlow,
    PlanarFlow,
    planar_step,
)
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint

FLOW_KINDS = {"iaf": InverseAutoregressiveFlow, "planar": PlanarFlow}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_flow(kind: str, latent_dim: int, steps: int, batch: int) -> tuple[Flow, torch.Tensor]:
    """A float64 flow with random weights (an IAF's spread beyond their initial scale, so that
    its gates differ from one another) and a random context (batch, C)."""
    torch.manual_seed(0)
    flow = FLOW_KINDS[kind](latent_dim, steps).double()
    g = seeded(1)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.2, generator=g)
    size = flow.context_size(latent_dim, steps)
    return flow, torch.randn(batch, size, dtype=torch.float64, generator=seeded(2))


def log_abs_det_jacobian(flow: Flow, z0: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """log |det dz_T/dz0| of each row of z0 (B, D) by autograd: (B,)."""
    values = []
    for row, c in zip(z0, context, strict=True):
        matrix = jacobian(lambda v, c=c: flow(v[None], c[None])[0][0], row)  # (D, D)
        values.append(torch.linalg.slogdet(matrix).logabsdet)
    return torch.stack(values)


def tiny_flow_vae(flow: str, architecture: str = "mlp", **options) -> ModelConfig:
    values = dict(
        model="vae",
        flow=flow,
        flow_steps=2,
        architecture=architecture,
        data_shape=(1, 8, 8),
        latent_dim=4,
        hidden_dims=(64,),
        conv_channels=(8, 16),
    )
    return ModelConfig(**(values | options))


def built(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(config)


# --- densities -------------------------------------------------------------------------------


def test_an_iaf_that_ignores_z_is_affine_so_its_posterior_is_a_known_gaussian() -> None:
    """With the MADEs' weights on z at zero, each step is z' = sigma z + (1 - sigma) m with
    sigma and m from the context only: q(z_T|x) is N(mean, std) stepped the same way."""
    flow, context = random_flow("iaf", 3, 2, batch=4)
    with torch.no_grad():
        for step in flow.steps:
            step.z_to_hidden.weight.zero_()
    mu = torch.randn(4, 3, dtype=torch.float64, generator=seeded(3))
    logvar = torch.randn(4, 3, dtype=torch.float64, generator=seeded(4))
    posterior = FlowPosterior(DiagonalGaussian(mu, logvar), flow, context)
    z, log_q = posterior.rsample_with_log_prob(k=6, generator=seeded(5))
    mean, std = mu, torch.exp(0.5 * logvar)
    for step in flow.steps:
        m, s = step.hidden_to_output(F.elu(step.z_to_hidden.bias + context)).chunk(2, dim=-1)
        sigma = torch.sigmoid(s + FORGET_BIAS)
        mean, std = sigma * mean + (1 - sigma) * m, sigma * std
    torch.testing.assert_close(log_q, Normal(mean, std).log_prob(z).sum(-1))
    eps = torch.randn(6, 4, 3, dtype=torch.float64, generator=seeded(5))
    torch.testing.assert_close(z, mean + std * eps)  # the base's noise, pushed through
    torch.testing.assert_close(posterior.mean, mean)  # f(mu): here the true mean
    assert not torch.allclose(mean, mu)


def test_a_1d_planar_posterior_density_integrates_to_one() -> None:
    """q(z_T) = q0(z0) / |dz_T/dz0| on a fine grid of z_T, each z0 found by bisection (the
    planar map is increasing in 1-D), integrates to 1; q0(z0) alone does not."""
    flow = PlanarFlow(1, 3).double()
    u, w, b = [1.5, -0.8, 0.7], [2.0, 1.5, -1.0], [0.5, -0.3, 0.2]
    context = torch.tensor([[u[t], w[t], b[t]] for t in range(3)], dtype=torch.float64).view(1, 9)
    base = DiagonalGaussian(torch.tensor([[0.3]]).double(), torch.tensor([[math.log(0.64)]]))
    lo, hi = 0.3 - 12 * 0.8, 0.3 + 12 * 0.8

    def forward(z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return flow(z0.view(-1, 1), context)

    z_t = torch.linspace(
        forward(torch.tensor([lo]))[0].item(),
        forward(torch.tensor([hi]))[0].item(),
        40_001,
        dtype=torch.float64,
    )
    low, high = torch.full_like(z_t, lo), torch.full_like(z_t, hi)
    for _ in range(80):
        middle = (low + high) / 2
        below = forward(middle)[0].view(-1) < z_t
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    z0 = ((low + high) / 2).view(-1, 1)
    reached, log_det = forward(z0)
    torch.testing.assert_close(reached.view(-1), z_t)
    log_q0 = base.log_prob(z0)
    assert torch.trapezoid((log_q0 - log_det).exp(), z_t).item() == pytest.approx(1.0, abs=1e-3)
    assert abs(torch.trapezoid(log_q0.exp(), z_t).item() - 1.0) > 0.05  # the log det matters


@pytest.mark.parametrize("latent_dim", [2, 5])
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_the_log_det_is_that_of_the_flow_jacobian(kind, latent_dim) -> None:
    flow, context = random_flow(kind, latent_dim, 3, batch=3)
    z0 = torch.randn(2, 3, latent_dim, dtype=torch.float64, generator=seeded(6))  # (K, B, D)
    z, log_det = flow(z0, context)
    assert z.shape == z0.shape and log_det.shape == (2, 3)
    for sample in range(2):
        expected = log_abs_det_jacobian(flow, z0[sample], context)
        torch.testing.assert_close(log_det[sample], expected)
    assert (log_det.abs() > 1e-3).all()  # not the identity


# --- structure -------------------------------------------------------------------------------


def test_each_iaf_step_is_autoregressive_in_its_order_and_the_order_reverses() -> None:
    d = 5
    flow, context = random_flow("iaf", d, 2, batch=1)
    z0 = torch.randn(d, dtype=torch.float64, generator=seeded(7))
    orders = [torch.arange(d), torch.arange(d).flip(0)]  # order[i]: z_i's place in the step
    for step, order in zip(flow.steps, orders, strict=True):
        matrix = jacobian(lambda v, step=step: step(v[None], context)[0][0], z0)  # dz'_i/dz_j
        after = order[None, :] > order[:, None]  # j after i in the step's order
        assert (matrix[after] == 0).all()
        assert (matrix[~after & ~torch.eye(d, dtype=torch.bool)].abs() > 1e-6).all()
        assert ((matrix.diagonal() > 0) & (matrix.diagonal() < 1)).all()  # sigma
    whole = jacobian(lambda v: flow(v[None], context)[0][0], z0)
    assert (whole.abs() > 1e-6).all()  # two orders: every z_i depends on every z0_j


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_the_planar_constraint_keeps_every_step_invertible(latent_dim) -> None:
    """For any u, w, b: 1 + u_hat . psi(z) > 0 (Rezende & Mohamed 2015, appendix A.1), where
    1 + u . psi(z) is not, and the step's log det is log(1 + u_hat . psi(z))."""
    g = seeded(8)
    n = 4000
    u, w = (5 * torch.randn(n, latent_dim, dtype=torch.float64, generator=g) for _ in range(2))
    b, z = (
        5 * torch.randn(n, 1, dtype=torch.float64, generator=g),
        torch.randn(n, latent_dim, dtype=torch.float64, generator=g),
    )
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (-1 + F.softplus(wu) - wu) * w / w.pow(2).sum(-1, keepdim=True)
    psi = (1 - torch.tanh((w * z).sum(-1, keepdim=True) + b).pow(2)) * w
    determinant = 1 + (u_hat * psi).sum(-1)
    assert (determinant > 0).all()
    assert ((1 + (u * psi).sum(-1)) <= 0).any()  # the unconstrained step folds
    _, log_det = planar_step(z, u, w, b)
    torch.testing.assert_close(log_det, determinant.log())


# --- the posterior object -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_a_flow_posterior_draws_slices_and_refuses_a_density_elsewhere(kind) -> None:
    model = built(tiny_flow_vae(kind)).eval()
    x = torch.rand(5, 1, 8, 8, generator=seeded(9))
    posterior = model.encode(x)
    assert isinstance(posterior, FlowPosterior) and len(posterior) == 5
    z, log_q = posterior.rsample_with_log_prob(k=3, generator=seeded(10))
    assert z.shape == (3, 5, 4) and log_q.shape == (3, 5)
    torch.testing.assert_close(posterior.rsample(k=3, generator=seeded(10)), z)
    torch.testing.assert_close(posterior.sample(k=3, generator=seeded(10)), z)
    z0 = posterior.base.rsample(k=3, generator=seeded(10))
    torch.testing.assert_close(model.flow(z0, posterior.context)[0], z)  # the Gaussian's noise
    torch.testing.assert_close(posterior[1:3].mean, posterior.mean[1:3])
    torch.testing.assert_close(posterior[torch.tensor([4, 0])].mode(), posterior.mean[[4, 0]])
    torch.testing.assert_close(model.gaussian_posterior(x).mu, posterior.base.mu)
    with pytest.raises(VaelabError, match="known only at its own draws") as error:
        posterior.log_prob(z)
    assert "\n" not in str(error.value)


def test_the_flow_widens_the_encoder_by_its_context_only() -> None:
    plain = built(tiny_flow_vae("none"))
    iaf, planar = built(tiny_flow_vae("iaf")), built(tiny_flow_vae("planar"))
    x = torch.rand(2, 1, 8, 8)
    assert plain.flow is None and plain.encoder(x).shape == (2, 8)
    assert iaf.encoder(x).shape == (2, 8 + 128)  # the MADEs' width
    assert planar.encoder(x).shape == (2, 8 + 2 * (2 * 4 + 1))  # u, w, b per step
    assert list(dict(planar.named_parameters())) == list(dict(plain.named_parameters()))


@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_a_flow_keeps_the_densities_float32_under_bfloat16_autocast(kind) -> None:
    model = built(tiny_flow_vae(kind))
    x = torch.rand(3, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        posterior = model.encode(x)
        z, log_q = posterior.rsample_with_log_prob(k=2, generator=seeded())
        terms = model.loss(x, generator=seeded())
        log_w = model.log_weights(x, 3, generator=seeded())
    assert posterior.context.dtype == z.dtype == log_q.dtype == torch.float32
    assert {t.dtype for t in (terms.total, terms.kl, log_w)} == {torch.float32}


@pytest.mark.parametrize("kind", ["ae", "vqvae", "cvae"])
def test_a_flow_is_for_the_vae_only(kind) -> None:
    with pytest.raises(VaelabError, match="--flow is for --model vae") as error:
        ModelConfig(model=kind, flow="iaf")
    assert "\n" not in str(error.value)


# --- the flow VAE ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_the_bounds_are_their_formulas_at_the_same_draws(kind, batch) -> None:
    """log w = log p(x|z) + log p(z) - (log q0(z0|x) - log |det dz/dz0|), the determinant by
    autograd; the one-sample loss is the ELBO at the draw of the same noise."""
    model = built(tiny_flow_vae(kind, latent_dim=3)).double()
    x = batch[:4].double()
    d = 3
    outputs = model.encoder(x)
    mu, logvar, context = outputs[:, :d], outputs[:, d : 2 * d], outputs[:, 2 * d :]

    def terms(z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = model.flow(z0, context)[0]
        log_det = torch.stack([log_abs_det_jacobian(model.flow, row, context) for row in z0])
        log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1) - log_det
        logits = model.decoder(z.reshape(-1, d)).view(*z.shape[:-1], 1, 8, 8)
        bce = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        log_px = -bce.flatten(-3).sum(-1)
        return log_px, Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q  # log p(x|z), -KL term

    eps = torch.randn(5, 4, d, dtype=torch.float64, generator=seeded(11))
    log_px, log_ratio = terms(mu + torch.exp(0.5 * logvar) * eps)
    torch.testing.assert_close(model.log_weights(x, 5, generator=seeded(11)), log_px + log_ratio)
    eps = torch.randn(4, d, dtype=torch.float64, generator=seeded(12))
    log_px, log_ratio = terms((mu + torch.exp(0.5 * logvar) * eps)[None])
    loss = model.loss(x, generator=seeded(12))
    torch.testing.assert_close(loss.recon, -log_px.mean())
    torch.testing.assert_close(loss.kl, -log_ratio.mean())
    torch.testing.assert_close(loss.total, -(log_px + log_ratio).mean())


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("kind", sorted(FLOW_KINDS))
def test_a_tiny_flow_vae_trains_saves_and_evaluates(kind, architecture, batch, tmp_path) -> None:
    config = tiny_flow_vae(kind, architecture)
    model = built(config)
    x = (batch > 0.5).float()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        terms = model.loss(x, generator=seeded(step))
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.item())
        if step == 0:  # every parameter received a gradient
            assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5

    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, RunConfig(model=config), {"epoch": 1})
    loaded = load_checkpoint(tmp_path / "ckpt")[0]
    assert loaded.config == config
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert torch.equal(
        loaded.log_weights(x, 4, generator=seeded()), model.log_weights(x, 4, generator=seeded())
    )

    result = evaluate(model, x[:8], k=20, seed=3)
    assert math.isfinite(result.nll) and result.nll <= result.neg_elbo + 1e-4
    with torch.no_grad():  # the same draws as the importance-weighted bound of each image
        by_image = [
            -log_mean_exp(
                model.log_weights(x[i : i + 1], 20, generator=seeded(image_seed(3, i))), dim=0
            )
            for i in range(8)
        ]
    assert result.nll == pytest.approx(torch.cat(by_image).mean().item(), abs=1e-4)
