"""The hierarchical VAEs (hvae: bottom-up inference, Burda et al. 2015; ladder: top-down,
Sønderby et al. 2016): their densities against hand-written layer-by-layer computations, the
bounds, the per-layer measures, the top-layer traversals and the --latent-dims checks.

tests/test_models.py runs the shared contract over both on its tiny configs; the tests here use
three layers (4, 3, 2), so that the chains have a middle layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

import vaelab
from vaelab import RunConfig, VaelabError
from vaelab.analysis.plots import latent_traversals
from vaelab.cli import main
from vaelab.models import ModelConfig, build_model
from vaelab.models.bounds import log_mean_exp
from vaelab.models.hierarchical import HierarchicalPosterior, precision_weighted
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint

DIMS = (4, 3, 2)
KINDS = ["hvae", "ladder"]
every_kind = pytest.mark.parametrize("kind", KINDS)
PRIOR_OPTIONS = {
    "normal": {},
    "vamp": {"prior": "vamp", "pseudo_inputs": 5},
    "mog": {"prior": "mog", "components": 3},
}


def config(kind: str, dims: tuple[int, ...] = DIMS, **options) -> ModelConfig:
    values = dict(model=kind, data_shape=(1, 8, 8), latent_dims=dims, hidden_dims=(32,))
    return ModelConfig(**(values | options))


def build(cfg: ModelConfig, seed: int = 0) -> vaelab.Autoencoder:
    torch.manual_seed(seed)
    return build_model(cfg)


def seeded(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(net: torch.nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, variance) from a network's outputs, mean and log-variance side by side."""
    mu, logvar = net(h).chunk(2, dim=-1)
    return mu, logvar.exp()


def normal(mu: torch.Tensor, variance: torch.Tensor) -> Normal:
    return Normal(mu, variance.sqrt())


def hand_log_p(model, z: torch.Tensor) -> torch.Tensor:
    """log p(z_3) + log p(z_2|z_3) + log p(z_1|z_2) with N(0, I) on top, by torch.distributions."""
    z1, z2, z3 = z.split(DIMS, dim=-1)
    nets = model.prior.conditionals  # [0]: p(z_1|z_2), [1]: p(z_2|z_3)
    return (
        Normal(0.0, 1.0).log_prob(z3).sum(-1)
        + normal(*gaussian(nets[1], z3)).log_prob(z2).sum(-1)
        + normal(*gaussian(nets[0], z2)).log_prob(z1).sum(-1)
    )


def sonderby(bottom_up: tuple, top_down: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Sønderby et al. 2016, eq. 18-19, as written: (mu_q, var_q) from (mu_hat, var_hat) and
    (mu_p, var_p)."""
    (mu_hat, var_hat), (mu_p, var_p) = bottom_up, top_down
    var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)
    return (mu_hat / var_hat + mu_p / var_p) * var_q, var_q


def hand_q_layers(model, x: torch.Tensor, z: torch.Tensor) -> list[Normal]:
    """q's Gaussian of each layer, z_1's first, its parent at z's values."""
    z1, z2, z3 = z.split(DIMS, dim=-1)
    if model.config.model == "hvae":  # q(z_1|x) q(z_2|z_1) q(z_3|z_2)
        return [
            normal(*gaussian(model.encoder, x)),
            normal(*gaussian(model.upward[0], z1)),
            normal(*gaussian(model.upward[1], z2)),
        ]
    # ladder: the bottom-up pass, then q(z_3|x), q(z_2|z_3, x), q(z_1|z_2, x)
    out1 = model.encoder(x)
    out2 = model.upward[0](out1)
    out3 = model.upward[1](out2)
    hat = [(o.chunk(2, -1)[0], o.chunk(2, -1)[1].exp()) for o in (out1, out2, out3)]
    nets = model.prior.conditionals
    return [
        normal(*sonderby(hat[0], gaussian(nets[0], z2))),
        normal(*sonderby(hat[1], gaussian(nets[1], z3))),
        normal(*hat[2]),
    ]


def hand_log_q(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    layers = z.split(DIMS, dim=-1)
    return sum(
        q.log_prob(v).sum(-1) for q, v in zip(hand_q_layers(model, x, z), layers, strict=True)
    )


# --- the densities, by hand ------------------------------------------------------------------


@every_kind
def test_prior_log_prob_is_the_sum_of_the_layers_normal_densities(kind) -> None:
    model = build(config(kind))
    z = torch.randn(5, 6, sum(DIMS)) * 2
    with torch.no_grad():
        torch.testing.assert_close(model.prior.log_prob(z), hand_log_p(model, z))


@every_kind
def test_prior_samples_ancestrally_from_the_top(kind) -> None:
    model = build(config(kind))
    nets = model.prior.conditionals
    generator = seeded()
    with torch.no_grad():
        z3 = torch.randn(7, 2, generator=generator)
        mu, var = gaussian(nets[1], z3)
        z2 = mu + var.sqrt() * torch.randn(7, 3, generator=generator)
        mu, var = gaussian(nets[0], z2)
        z1 = mu + var.sqrt() * torch.randn(7, 4, generator=generator)
        expected = torch.cat([z1, z2, z3], dim=-1)
    torch.testing.assert_close(model.prior.sample(7, generator=seeded()), expected)
    torch.testing.assert_close(model.draw_codes(7, generator=seeded()), expected)


def test_precision_weighting_is_sonderby_eq_18_19() -> None:
    generator = seeded()
    mu_hat, mu_p = torch.randn(2, 50, 6, generator=generator, dtype=torch.float64)
    logvar_hat, logvar_p = 6 * torch.randn(2, 50, 6, generator=generator, dtype=torch.float64)
    mu, logvar = precision_weighted((mu_hat, logvar_hat), (mu_p, logvar_p))
    mu_q, var_q = sonderby((mu_hat, logvar_hat.exp()), (mu_p, logvar_p.exp()))
    torch.testing.assert_close(mu, mu_q)
    torch.testing.assert_close(logvar, var_q.log())
    # a sure bottom-up estimate wins; an unsure one leaves p(z_l | z_l+1)
    sure = precision_weighted((mu_hat, torch.full_like(mu_hat, -30)), (mu_p, logvar_p.clamp(-5)))
    torch.testing.assert_close(sure[0], mu_hat)
    unsure = precision_weighted(
        (mu_hat, torch.full_like(mu_hat, 30)), (mu_p, logvar_p.clamp(max=5))
    )
    torch.testing.assert_close(unsure[0], mu_p)


@every_kind
def test_posterior_log_prob_is_the_hand_written_chain(kind, batch) -> None:
    model = build(config(kind))
    x = batch[:6]
    with torch.no_grad():
        posterior = model.encode(x)
        anywhere = torch.randn(4, 6, sum(DIMS), generator=seeded()) * 2
        torch.testing.assert_close(posterior.log_prob(anywhere), hand_log_q(model, x, anywhere))
        z, log_q = posterior.rsample_with_log_prob(k=3, generator=seeded())
        torch.testing.assert_close(log_q, posterior.log_prob(z))
        torch.testing.assert_close(log_q, hand_log_q(model, x, z))


@every_kind
def test_posterior_samples_ancestrally_in_the_inference_order(kind, batch) -> None:
    """hvae draws z_1 first, from q(z_1|x); ladder draws z_3 first, from the bottom-up top."""
    model = build(config(kind))
    x = batch[:5]
    generator = seeded()
    with torch.no_grad():
        values: dict[int, torch.Tensor] = {}
        order = [0, 1, 2] if kind == "hvae" else [2, 1, 0]
        for layer in order:
            z = torch.cat([values.get(i, torch.zeros(5, d)) for i, d in enumerate(DIMS)], -1)
            q = hand_q_layers(model, x, z)[layer]
            values[layer] = q.mean + q.stddev * torch.randn(5, DIMS[layer], generator=generator)
        expected = torch.cat([values[i] for i in range(3)], dim=-1)
        torch.testing.assert_close(model.encode(x).rsample(generator=seeded()), expected)


@every_kind
def test_posterior_mean_is_the_ancestral_means(kind, batch) -> None:
    model = build(config(kind))
    x = batch[:5]
    with torch.no_grad():
        means: dict[int, torch.Tensor] = {}
        for layer in [0, 1, 2] if kind == "hvae" else [2, 1, 0]:
            z = torch.cat([means.get(i, torch.zeros(5, d)) for i, d in enumerate(DIMS)], -1)
            means[layer] = hand_q_layers(model, x, z)[layer].mean
        posterior = model.encode(x)
        expected = torch.cat([means[i] for i in range(3)], dim=-1)
        torch.testing.assert_close(posterior.mean, expected)
        torch.testing.assert_close(posterior.mode(), expected)


@every_kind
def test_posterior_slices_every_example_tensor(kind, batch) -> None:
    model = build(config(kind))
    with torch.no_grad():
        posterior = model.encode(batch[:6])
        part = posterior[2:5]
        assert isinstance(part, HierarchicalPosterior) and len(part) == 3 and len(posterior) == 6
        torch.testing.assert_close(part.mean, posterior.mean[2:5])
        z = posterior.sample(k=4, generator=seeded())
        assert z.shape == (4, 6, sum(DIMS))
        torch.testing.assert_close(part.log_prob(z[:, 2:5]), posterior.log_prob(z)[:, 2:5])
        chosen = torch.tensor([5, 0])
        torch.testing.assert_close(posterior[chosen].mean, posterior.mean[chosen])


@pytest.mark.parametrize("kind", KINDS)
def test_densities_integrate_to_one_on_a_grid(kind, batch) -> None:
    """Two layers of one unit each: exp(log q(z|x)) and exp(log p(z)) over a fine 2-D grid."""
    model = build(config(kind, dims=(1, 1)))
    step = 0.02
    axis = torch.arange(-8.0, 8.0, step, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)[:, None, :]  # (N, 1, 2): one image's codes
    model = model.double()
    with torch.no_grad():
        log_q = model.encode(batch[:1].double()).log_prob(grid)
        log_p = model.prior.log_prob(grid)
    assert float(log_q.exp().sum() * step**2) == pytest.approx(1.0, abs=1e-3)
    assert float(log_p.exp().sum() * step**2) == pytest.approx(1.0, abs=1e-3)


# --- the bounds ------------------------------------------------------------------------------


@every_kind
def test_log_weights_are_the_hand_written_terms_at_the_same_draws(kind, batch) -> None:
    model = build(config(kind))
    x = batch[:6]
    with torch.no_grad():
        log_w = model.log_weights(x, 4, generator=seeded())
        z = model.encode(x).rsample(k=4, generator=seeded())  # (4, 6, D)
        logits = model.decoder.net(z[..., : DIMS[0]].reshape(-1, DIMS[0])).view(4, 6, 1, 8, 8)
        targets = x.expand(4, -1, -1, -1, -1)
        log_px = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        expected = log_px.flatten(2).sum(-1) + hand_log_p(model, z) - hand_log_q(model, x, z)
    torch.testing.assert_close(log_w, expected)


@every_kind
def test_the_decoder_reads_the_first_layer_only(kind) -> None:
    model = build(config(kind))
    z = torch.randn(3, sum(DIMS))
    moved = z.clone()
    moved[:, DIMS[0] :] += 5.0
    with torch.no_grad():
        assert torch.equal(model.decode(z), model.decode(moved))
        assert not torch.equal(model.decode(z), model.decode(z + 1.0))


@every_kind
def test_elbo_loss_is_recon_plus_the_monte_carlo_kl(kind, batch) -> None:
    model = build(config(kind, beta=0.5))
    with torch.no_grad():
        terms = model.loss(batch, kl_scale=0.5, generator=seeded())
        posterior = model.encode(batch)
        z, log_q = posterior.rsample_with_log_prob(generator=seeded())
        kl = (log_q - model.prior.log_prob(z)).mean()
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.total, terms.recon + 0.25 * kl)


@every_kind
def test_iwae_loss_is_the_importance_weighted_bound(kind, batch) -> None:
    model = build(config(kind, objective="iwae", k=5))
    with torch.no_grad():
        terms = model.loss(batch, generator=seeded())
        log_w = model.log_weights(batch, 5, generator=seeded())
    torch.testing.assert_close(terms.total, -log_mean_exp(log_w, dim=0).mean())
    assert terms.total < terms.recon + terms.kl  # tighter than the ELBO of the same draws


@every_kind
def test_densities_stay_float32_under_bfloat16_autocast(kind, batch) -> None:
    model = build(config(kind, objective="iwae", k=3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.loss(batch[:5], generator=seeded())
        log_w = model.log_weights(batch[:5], 2, generator=seeded())
        posterior = model.encode(batch[:5])
        z = posterior.sample(k=2, generator=seeded())
        parts = model.importance_terms(batch[:5], z, posterior)
    assert z.dtype == torch.float32
    tensors = (terms.total, terms.kl, log_w, parts.log_pz, parts.log_qz, parts.log_px_z)
    assert {t.dtype for t in tensors} == {torch.float32}


# --- the contract, with each prior on the top layer ------------------------------------------


@every_kind
@pytest.mark.parametrize("prior", sorted(PRIOR_OPTIONS))
def test_every_parameter_gets_a_gradient(kind, prior, batch) -> None:
    model = build(config(kind, **PRIOR_OPTIONS[prior]))
    model.loss(batch, generator=seeded()).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    if prior == "vamp":
        assert model.prior.top.pseudo_inputs.grad.abs().sum() > 0


@every_kind
@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_loss_falls_on_a_fixed_batch(kind, prior, batch) -> None:
    model = build(config(kind, objective="iwae", k=3, **PRIOR_OPTIONS[prior]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = seeded()
    losses = []
    for _ in range(60):
        terms = model.loss(batch, generator=generator)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.item())
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


@every_kind
@pytest.mark.parametrize("prior", sorted(PRIOR_OPTIONS))
def test_shapes_sampling_and_checkpoint_round_trip(kind, prior, tmp_path) -> None:
    cfg = config(kind, **PRIOR_OPTIONS[prior])
    model = build(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    x = torch.rand(4, 1, 8, 8)
    assert cfg.latent_dim == sum(DIMS)
    assert model.encode(x).mean.shape == (4, 9)
    assert model.draw_codes(5).shape == (5, 9)
    a = model.sample(5, generator=seeded(7))
    assert torch.equal(a, model.sample(5, generator=seeded(7)))
    assert not torch.equal(a, model.sample(5, generator=seeded(8)))
    save_checkpoint(tmp_path / "ckpt", model, RunConfig(model=cfg), {"epoch": 1})
    loaded = load_checkpoint(tmp_path / "ckpt")[0]
    assert type(loaded) is type(model) and loaded.config == cfg
    assert torch.equal(loaded.sample(5, generator=seeded(7)), a)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert torch.equal(
        loaded.log_weights(x, 3, generator=seeded()), model.log_weights(x, 3, generator=seeded())
    )


@every_kind
def test_evaluate_and_the_per_layer_measures(kind, digits_x) -> None:
    model = build(config(kind))
    x = torch.bernoulli(digits_x[:200], generator=seeded())
    result = vaelab.evaluate(model, x, k=20)
    assert result.nll <= result.neg_elbo
    measures = result.measures
    assert list(measures) == [
        "kl_z1",
        "kl_z2",
        "kl_z3",
        "active_units_z1",
        "active_units_z2",
        "active_units_z3",
    ]
    kl_sum = sum(measures[f"kl_z{i}"] for i in (1, 2, 3))
    assert kl_sum == pytest.approx(result.kl, rel=0.05)  # two Monte Carlo estimates of one KL
    assert all(measures[f"kl_z{i}"] > 0 for i in (1, 2, 3))
    for i, size in enumerate(DIMS, start=1):
        count = measures[f"active_units_z{i}"]
        assert count == int(count) and 0 <= count <= size
    assert sum(measures[f"active_units_z{i}"] for i in (1, 2, 3)) == result.active_units
    assert model.measures(x) == measures  # the same draws at every call


def test_measures_count_a_layer_s_varying_units_as_active(batch) -> None:
    """Active units: Cov_x of the posterior mean above 0.01, counted on each layer's part."""
    model = build(config("hvae"))
    with torch.no_grad():  # q(z_1|x)'s mean: units 0 and 1 follow x, units 2 and 3 are constant
        head = model.encoder.net[-1]
        head.weight[:4].zero_()
        head.bias[:4].zero_()
        head.weight[:2] = 10 * torch.randn(2, head.in_features, generator=seeded())
    measures = model.measures(batch)
    assert measures["active_units_z1"] == 2


# --- traversals of the top layer -------------------------------------------------------------


@every_kind
def test_codes_from_top_put_the_lower_layers_at_the_conditional_means(kind) -> None:
    model = build(config(kind))
    z3 = torch.randn(6, 2)
    nets = model.prior.conditionals
    with torch.no_grad():
        z2 = gaussian(nets[1], z3)[0]
        z1 = gaussian(nets[0], z2)[0]
        torch.testing.assert_close(model.codes_from_top(z3), torch.cat([z1, z2, z3], -1))


def test_traversals_move_the_top_layer(batch) -> None:
    model = build(config("ladder"))
    with torch.no_grad():
        codes = model.encode(batch).mean
    fig = latent_traversals(model, codes, steps=5)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert len(names) == DIMS[-1] and all(n.startswith("$z_{3,") for n in names)
    title = " ".join(ax.get_title().split())  # unwrapped
    assert "latent traversals: all 2 dimensions of the top layer" in title


# --- configuration ---------------------------------------------------------------------------


def test_latent_dims_settle_the_latent_size() -> None:
    assert ModelConfig(model="hvae", latent_dims=[64, 32]).latent_dims == (64, 32)
    assert ModelConfig(model="ladder", latent_dims=[8, 4, 2]).latent_dim == 14
    default = ModelConfig(model="hvae")
    assert default.latent_dims == (100, 50) and default.latent_dim == 150
    # a saved config carries the sum, and loads again
    assert ModelConfig(model="hvae", latent_dims=(8, 4), latent_dim=12).latent_dim == 12


@pytest.mark.parametrize(
    "options",
    [
        {"model": "hvae", "latent_dims": (8,)},
        {"model": "ladder", "latent_dims": "8,4"},  # the CLI's text, not a config value
        {"model": "hvae", "latent_dims": (8, 0)},
        {"model": "ladder", "latent_dims": "8,x"},
        {"model": "vae", "latent_dims": (8, 4)},
        {"model": "hvae", "flow": "iaf"},
        {"model": "hvae", "latent_dims": (8, 4), "latent_dim": 20},  # not silently replaced
    ],
    ids=repr,
)
def test_bad_latent_dims_are_one_line_errors(options) -> None:
    with pytest.raises(VaelabError) as error:
        ModelConfig(**options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("model", "dims", "fragment"),
    [
        ("hvae", ["--latent-dims", "8"], "two or more"),
        ("ladder", ["--latent-dims", "8,0"], "two or more"),
        ("vae", ["--latent-dims", "8,4"], "hvae"),
        ("ladder", ["--latent-dims", "8,4", "--latent-dim", "20"], "sum of its --latent-dims"),
        ("hvae", ["--latent-dim", "20"], "100,50 make 150"),
    ],
)
def test_cli_refuses_bad_latent_dims_in_one_line(model, dims, fragment, capsys, tmp_path) -> None:
    args = ["train", "--dataset", "digits", "--model", model, *dims]
    try:
        code = main([*args, "--out", str(tmp_path / "run"), "--no-progress", "--no-figures"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "run" / "config.json").exists()
