"""The model contract, run over every registered model x architecture x likelihood on tiny configs,
then what is particular to the VAE, the AE and the DAE, and the model configuration's checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import vaelab
from vaelab import RunConfig, VaelabError
from vaelab.models import MODELS, ModelConfig, bits_per_dim, build_model, slerp
from vaelab.models.config import HIERARCHICAL, MAX_CONTEXT_VALUES
from vaelab.models.distributions import DiagonalGaussian, PointMass
from vaelab.models.networks import conv_level_sizes
from vaelab.models.priors import Prior, StandardNormalPrior
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint

# +: an autoregressive decoder term
ARCHITECTURES = ["mlp", "conv", "mlp+linear", "conv+local", "mlp+gated"]
# name -> (likelihood, sigma); a fixed sigma of 0.1 suits [0, 1] images (1.0 would leave the
# loss dominated by its constant log-normaliser, so a fall would be hard to see).
LIKELIHOODS = {
    "bernoulli": ("bernoulli", None),
    "gaussian-fixed": ("gaussian", 0.1),
    "gaussian-learned": ("gaussian", None),
}
SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64), (3, 30, 45)]

# Every registered model, and variants: the cvae conditioned on observed quadrants with a
# learned prior (the other kind of condition, and the conditional prior), the vae with each
# learned prior and each flow posterior.
VARIANTS = {
    "cvae-observed": {"model": "cvae", "observe": "left", "conditional_prior": True},
    "vae-vamp": {"model": "vae", "prior": "vamp", "pseudo_inputs": 5},
    "vae-mog": {"model": "vae", "prior": "mog", "components": 3},
    "vae-iaf": {"model": "vae", "flow": "iaf"},
    "vae-planar": {"model": "vae", "flow": "planar"},
}
KINDS = [*sorted(MODELS), *VARIANTS]
every_model = pytest.mark.parametrize("kind", KINDS)
every_architecture = pytest.mark.parametrize("architecture", ARCHITECTURES)
# Autoregressive decoder terms are for VAEs only (an autoencoder could copy x through them).
every_model_and_architecture = pytest.mark.parametrize(
    ("kind", "architecture"),
    [(k, a) for k in KINDS for a in ARCHITECTURES if "+" not in a or k == "vae"],
)
every_likelihood = pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))


def tiny(kind: str, architecture: str, likelihood: str = "bernoulli", **options) -> ModelConfig:
    name, sigma = LIKELIHOODS[likelihood]
    architecture, _, ar = architecture.partition("+")
    values = dict(
        model=kind,
        architecture=architecture,
        autoregressive=ar or "none",
        likelihood=name,
        sigma=sigma,
        data_shape=(1, 8, 8),
        latent_dim=4,
        hidden_dims=(64,),
        conv_channels=(8, 16),
        noise_level=0.2,
        dataset_size=100,  # a btcvae's and an m2's N (the others ignore it)
        discriminator_hidden=(32, 32),  # a factorvae's (the others ignore it)
        classes=3,  # a cvae's and an m2's (the others ignore it)
    )
    values |= VARIANTS.get(kind, {})
    values |= options
    if values["model"] in HIERARCHICAL and "latent_dims" not in options:
        top = values["latent_dim"] // 2  # two layers that make the tiny code size
        values["latent_dims"] = (values["latent_dim"] - top, top)
    return ModelConfig(**values)


def condition(model: vaelab.Autoencoder, x: torch.Tensor) -> torch.Tensor | None:
    """The condition y of the images x for the model's methods: labels 0, 1, 2, 0, ... for a
    label-conditional model, the images themselves for one conditioned on observed quadrants,
    None for an unconditional one."""
    if model.needs_labels:
        return torch.arange(len(x)) % model.config.classes
    return x if model.conditional else None


def conditions(model: vaelab.Autoencoder, n: int) -> torch.Tensor | None:
    """The condition of n codes to decode: n labels, or n images holding the observed part."""
    return condition(model, torch.rand(n, *model.config.data_shape, generator=fixed_generator()))


def build(config: ModelConfig, seed: int = 0) -> vaelab.Autoencoder:
    torch.manual_seed(seed)
    return build_model(config)


def fixed_generator() -> torch.Generator:
    return torch.Generator().manual_seed(123)


# --- the contract: every model, every architecture, every likelihood -------------------------


@every_model_and_architecture
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shapes(kind, architecture, shape):
    if architecture.endswith("+linear") and math.prod(shape) > MAX_CONTEXT_VALUES:
        with pytest.raises(vaelab.VaelabError, match="autoregressive linear needs images of at"):
            tiny(kind, architecture, data_shape=shape)
        return
    model = build(tiny(kind, architecture, data_shape=shape))
    d = model.config.latent_dim  # 4 as asked, or derived by the model (a VQ-VAE's D h w)
    x = torch.rand(3, *shape)
    y, y5, y6 = condition(model, x), conditions(model, 5), conditions(model, 6)
    posterior = model.encode(x, y)
    assert posterior.mean.shape == (3, d)
    assert posterior.sample().shape == (3, d)
    assert model.decode(posterior.mean, condition(model, x)).shape == (3, *shape)
    params = model.decode_params(torch.zeros(5, d), torch.rand(5, *shape), y5)
    assert params.shape == (5, *shape)
    assert model.draw_codes(6, y=y6).shape == (6, d)
    assert model.sample(6, y=y6).shape == (6, *shape)
    assert model.reconstruct(x, y).shape == (3, *shape)
    if not model.needs_labels:
        assert model(x).shape == (3, *shape)
    path_y = {} if y is None or model.conditional and not model.needs_labels else {"y": y[0]}
    assert model.interpolate(x[0], x[1], steps=7, **path_y).shape == (7, *shape)
    assert model.interpolate(x[0], x[1], steps=4, spherical=True, **path_y).shape == (4, *shape)
    terms = model.loss(x, y=y)
    assert terms.total.shape == terms.recon.shape == terms.kl.shape == ()
    assert math.isfinite(terms.total.item())


@every_model_and_architecture
def test_prior_capability_and_bound(kind, architecture):
    """A model with a prior draws its samples from it and has an importance-weighted bound of
    shape (K, B); one without says so in one line."""
    model = build(tiny(kind, architecture))
    x = torch.rand(3, 1, 8, 8)
    assert model.has_prior == (model.prior is not None)
    if not model.has_prior:
        with pytest.raises(VaelabError, match="has no prior"):
            model.log_weights(x, 5)
        return
    y4 = conditions(model, 4)
    z = model.draw_codes(4, y=y4, generator=fixed_generator())
    assert z.shape == (4, model.config.latent_dim)
    if isinstance(model.prior, Prior):  # a prior over codes z (a VQ-VAE's is over index grids)
        prior_y = model.prior_condition(None, y4)
        drawn = model.prior.sample(4, y=prior_y, generator=fixed_generator())
        torch.testing.assert_close(drawn, z)
    torch.testing.assert_close(model.draw_codes(4, y=y4, generator=fixed_generator()), z)
    with torch.no_grad():
        sampled = model.sample(4, y=y4, generator=fixed_generator())
        torch.testing.assert_close(sampled, model.decode(z, y4))
        log_w = model.log_weights(x, 5, y=condition(model, x), generator=fixed_generator())
    assert log_w.shape == (5, 3) and torch.isfinite(log_w).all()


@every_model_and_architecture
def test_an_unconditional_model_ignores_the_condition(kind, architecture):
    model = build(tiny(kind, architecture)).eval()
    if model.conditional:
        return  # see tests/test_conditional_models.py
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, y).mean, model.encode(x).mean)
        torch.testing.assert_close(model.reconstruct(x, y), model.reconstruct(x))
        z = model.encode(x).mean
        torch.testing.assert_close(model.decode(z, y), model.decode(z))
        a = model.loss(x, y=y, generator=fixed_generator()).total
        b = model.loss(x, generator=fixed_generator()).total
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(
            model.sample(2, y=y[:2], generator=fixed_generator()),
            model.sample(2, generator=fixed_generator()),
        )


@every_model_and_architecture
@every_likelihood
def test_loss_falls_when_trained_on_a_fixed_batch(kind, architecture, likelihood, batch):
    model = build(tiny(kind, architecture, likelihood))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = fixed_generator()
    losses = []
    y = condition(model, batch)
    for _ in range(80):
        terms = model.loss(batch, y=y, generator=generator)
        optimizer.zero_grad()
        terms.objective.backward()
        optimizer.step()
        losses.append(terms.total.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert all(math.isfinite(v) for v in losses)
    assert last < first - 0.1 * abs(first), (first, last)


@every_model_and_architecture
@every_likelihood
def test_every_parameter_changes_after_one_step(kind, architecture, likelihood, batch):
    model = build(tiny(kind, architecture, likelihood))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # The local and gated contexts' output layers start at zero, so the layers before them
    # move from step 2.
    y = condition(model, batch)
    if kind == "m2":  # half the labels hidden: the classifier learns from both kinds of image
        y[::2] = -1
    for _ in range(2 if architecture.endswith(("+local", "+gated")) else 1):
        optimizer.zero_grad()
        model.loss(batch, y=y, generator=fixed_generator()).objective.backward()
        optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []  # every parameter receives a gradient
    assert ("likelihood.log_sigma" in before) == (likelihood == "gaussian-learned")


@every_model_and_architecture
@every_likelihood
def test_checkpoint_round_trip_gives_identical_outputs(kind, architecture, likelihood, tmp_path):
    config = tiny(kind, architecture, likelihood)
    model = build(config)
    with torch.no_grad():  # move every weight (and a learned sigma) away from its initial value
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, RunConfig(model=config), {"epoch": 3})
    x = torch.rand(4, 1, 8, 8)
    z = torch.randn(4, config.latent_dim)
    y = condition(model, x)
    for loaded in (load_checkpoint(tmp_path / "ckpt")[0], vaelab.load(tmp_path / "ckpt")):
        assert type(loaded) is type(model)
        assert loaded.config == config
        assert not loaded.training
        state, loaded_state = model.state_dict(), loaded.state_dict()
        assert state.keys() == loaded_state.keys()
        assert all(torch.equal(state[k], loaded_state[k]) for k in state)
        assert torch.equal(loaded.reconstruct(x, y), model.reconstruct(x, y))
        assert torch.equal(loaded.decode(z, y), model.decode(z, y))
        torch.testing.assert_close(
            loaded.loss(x, y=y, generator=fixed_generator()).total,
            model.loss(x, y=y, generator=fixed_generator()).total,
            rtol=0,
            atol=0,
        )


@every_model_and_architecture
def test_sample_is_reproducible_with_a_seeded_generator(kind, architecture):
    model = build(tiny(kind, architecture))
    y = conditions(model, 5)
    a = model.sample(5, y=y, generator=torch.Generator().manual_seed(7))
    b = model.sample(5, y=y, generator=torch.Generator().manual_seed(7))
    c = model.sample(5, y=y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    z = torch.randn(5, model.config.latent_dim)
    assert torch.equal(model.sample(5, y=y, z=z), model.decode(z, y))


@every_model_and_architecture
def test_the_caller_chooses_the_dtype(kind, architecture):
    model = build(tiny(kind, architecture, "gaussian-learned")).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y3 = conditions(model, 3)
    y3 = y3.double() if y3 is not None and y3.is_floating_point() else y3
    generator = torch.Generator().manual_seed(0)
    assert model.sample(3, y=y3, generator=generator).dtype == torch.float64
    assert model.reconstruct(x, condition(model, x)).dtype == torch.float64
    path_y = {"y": torch.tensor(1)} if model.needs_labels and kind == "cvae" else {}
    assert model.interpolate(x[0], x[1], steps=3, **path_y).dtype == torch.float64
    loss = model.loss(x, y=condition(model, x), generator=fixed_generator())
    assert loss.total.dtype == torch.float64


@every_model_and_architecture
def test_loss_is_reproducible_with_a_seeded_generator(kind, architecture, batch):
    model = build(tiny(kind, architecture))
    # A training-mode loss may update state (a VQ-VAE's codebook): score two identical copies.
    twin = copy.deepcopy(model)
    y = condition(model, batch)
    a = model.loss(batch, y=y, generator=fixed_generator())
    b = twin.loss(batch, y=y, generator=fixed_generator())
    assert torch.equal(a.total, b.total)
    assert torch.equal(a.recon, b.recon)


@every_model_and_architecture
def test_interpolation_ends_are_the_reconstructions(kind, architecture):
    # eval: a VQ-VAE's encoder in training mode moves its codebook at every call
    model = build(tiny(kind, architecture)).eval()
    x = torch.rand(2, 1, 8, 8)
    if model.conditional:  # one condition for the path: a label, or x_a's observed part
        y = torch.tensor([1, 1]) if model.needs_labels else x[:1].expand(2, -1, -1, -1)
        path_y = {"y": torch.tensor(1)} if model.needs_labels else {}
    else:
        y, path_y = None, {}
    reconstructions = model.reconstruct(x, y)
    for spherical in (False, True):
        path = model.interpolate(x[0], x[1], steps=5, spherical=spherical, **path_y)
        torch.testing.assert_close(path[0], reconstructions[0])
        torch.testing.assert_close(path[-1], reconstructions[1])


@every_model
def test_decoded_means_are_probabilities_for_bernoulli(kind):
    model = build(tiny(kind, "mlp"))
    images = model.sample(8, y=conditions(model, 8))
    assert images.min() >= 0 and images.max() <= 1


@every_model
@every_likelihood
def test_loss_recon_is_the_likelihood_nll_of_the_clean_batch(kind, likelihood, batch):
    """The loss convention: sum over pixels per example, mean over the batch."""
    # eval: a VQ-VAE's training-mode passes move its codebook, so the two would see different ones
    model = build(tiny(kind, "mlp", likelihood, noise_level=0.0)).eval()
    y = condition(model, batch)
    # the VAE's recon term decodes one posterior sample; the same generator draws the same z
    z = model.encode(batch, y).sample(generator=fixed_generator())
    # (a completion model scores only the unobserved pixels)
    expected = -model.log_likelihood(model.decode_params(z, batch, y), batch).mean()
    terms = model.loss(batch, y=y, generator=fixed_generator())
    torch.testing.assert_close(terms.recon, expected)


# --- the VAE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
@pytest.mark.parametrize("kl_scale", [0.25, 1.0])
def test_vae_beta_and_kl_scale_weight_the_kl(beta, kl_scale, batch):
    reference = build(tiny("vae", "mlp"))
    weighted = build_model(tiny("vae", "mlp", beta=beta))
    weighted.load_state_dict(reference.state_dict())
    base = reference.loss(batch, generator=fixed_generator())
    terms = weighted.loss(batch, kl_scale=kl_scale, generator=fixed_generator())
    assert torch.equal(terms.recon, base.recon)
    assert torch.equal(terms.kl, base.kl)
    assert terms.kl.item() > 0
    torch.testing.assert_close(terms.total, terms.recon + beta * kl_scale * terms.kl)
    torch.testing.assert_close(base.total, base.recon + base.kl)


def test_vae_kl_is_the_batch_mean_of_the_posterior_kl(batch):
    model = build(tiny("vae", "conv"))
    posterior = model.encode(batch)
    assert isinstance(posterior, DiagonalGaussian)
    torch.testing.assert_close(model.loss(batch).kl, model.prior.kl(posterior).mean())


def test_vae_loss_samples_the_posterior(batch):
    model = build(tiny("vae", "mlp"))
    a = model.loss(batch, generator=torch.Generator().manual_seed(1))
    b = model.loss(batch, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a.recon, b.recon)
    assert torch.equal(a.kl, b.kl)  # closed form: no sampling


def test_vae_encoder_splits_mu_and_logvar():
    model = build(tiny("vae", "mlp"))
    x = torch.rand(3, 1, 8, 8)
    out = model.encoder(x)
    posterior = model.encode(x)
    assert out.shape == (3, 8)
    assert torch.equal(posterior.mu, out[:, :4])
    assert torch.equal(posterior.logvar, out[:, 4:])
    assert torch.equal(model.reconstruct(x), model.decode(posterior.mu))


# --- the standard and the denoising autoencoder ----------------------------------------------


@pytest.mark.parametrize("kind", ["ae", "dae"])
def test_autoencoders_have_no_kl(kind, batch):
    model = build(tiny(kind, "mlp"))
    assert isinstance(model.encode(batch), PointMass)
    terms = model.loss(batch, kl_scale=0.5, generator=fixed_generator())
    assert terms.kl.item() == 0.0
    assert torch.equal(terms.total, terms.recon)


def test_dae_gaussian_noise_has_the_configured_std():
    model = build(tiny("dae", "mlp", noise="gaussian", noise_level=0.3))
    x = torch.rand(64, 1, 8, 8)
    noisy = model.corrupt(x, generator=fixed_generator())
    assert noisy.shape == x.shape
    noise = noisy - x
    assert abs(float(noise.std()) - 0.3) < 0.02  # 4096 draws: std error of the std ~ 0.003
    assert abs(float(noise.mean())) < 0.02


@pytest.mark.parametrize("level", [0.0, 0.25, 0.5, 1.0])
def test_dae_mask_noise_zeroes_that_fraction_of_pixels(level):
    model = build(tiny("dae", "mlp", noise="mask", noise_level=level))
    x = torch.rand(64, 1, 8, 8) + 0.5  # no zeros of its own
    noisy = model.corrupt(x, generator=fixed_generator())
    zeroed = noisy == 0
    assert torch.equal(noisy[~zeroed], x[~zeroed])  # kept pixels are unchanged
    assert abs(float(zeroed.float().mean()) - level) < 0.03  # 4096 pixels: std error <= 0.008
    if level == 1.0:
        assert not noisy.any()
    if level == 0.0:
        assert torch.equal(noisy, x)


@pytest.mark.parametrize("noise", ["gaussian", "mask"])
def test_dae_encodes_the_corrupted_input_but_targets_the_clean_one(noise, batch):
    model = build(tiny("dae", "mlp", noise=noise, noise_level=0.5))
    noisy = model.corrupt(batch, generator=fixed_generator())
    assert not torch.equal(noisy, batch)
    x_params = model.decode_params(model.encode(noisy).mean)
    expected = model.likelihood.nll(x_params, batch).mean()
    terms = model.loss(batch, generator=fixed_generator())
    torch.testing.assert_close(terms.recon, expected)
    noisy_target = model.likelihood.nll(x_params, noisy.clamp(0, 1)).mean()
    assert not torch.allclose(terms.recon, noisy_target)


def test_dae_fully_masked_input_decodes_from_zeros(batch):
    model = build(tiny("dae", "conv", noise="mask", noise_level=1.0))
    x_params = model.decode_params(model.encode(torch.zeros_like(batch)).mean)
    expected = model.likelihood.nll(x_params, batch).mean()
    torch.testing.assert_close(model.loss(batch).recon, expected)


def test_dae_without_noise_scores_like_the_ae(batch):
    ae = build(tiny("ae", "mlp"))
    dae = build_model(tiny("dae", "mlp", noise_level=0.0))
    dae.load_state_dict(ae.state_dict())
    torch.testing.assert_close(dae.loss(batch).total, ae.loss(batch).total)


def test_dae_corruption_is_reproducible_with_a_generator(batch):
    model = build(tiny("dae", "mlp"))
    a = model.corrupt(batch, generator=torch.Generator().manual_seed(1))
    b = model.corrupt(batch, generator=torch.Generator().manual_seed(1))
    c = model.corrupt(batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- overfitting one batch -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "target"), [("ae", 0.1), ("vae", 3.0)])
def test_overfits_one_batch(kind, target, batch):
    """On 8 binarised digits the reconstruction NLL can approach 0 nats (from 64 log 2 ~ 44).

    The VAE's recon is measured under posterior samples, so it stays above the AE's; it is
    averaged over 20 draws (0.6-0.9 nats for several seeds, against the target of 3).
    """
    x = (batch[:8] > 0.5).float()
    model = build(tiny(kind, "mlp", latent_dim=8, hidden_dims=(256,)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = fixed_generator()
    start = model.loss(x, generator=generator).recon.item()
    for _ in range(800):
        terms = model.loss(x, generator=generator)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
    with torch.no_grad():
        final = sum(model.loss(x, generator=generator).recon.item() for _ in range(20)) / 20
    assert start > 30
    assert final < target, final


# --- model configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"latent_dim": 0},
        {"latent_dim": -1},
        {"latent_dim": 2.5},
        {"model": "gan"},
        {"architecture": "transformer"},
        {"likelihood": "poisson"},
        {"activation": "swish"},
        {"noise": "salt"},
        {"beta": -1.0},
        {"beta": float("nan")},
        {"sigma": 0.0},
        {"sigma": -0.5},
        {"sigma": float("nan")},
        {"data_shape": (1, 0, 8)},
        {"data_shape": (8, 8)},
        {"hidden_dims": (32, 0)},
        {"conv_channels": ()},
        {"model": "dae", "noise": "mask", "noise_level": 1.5},
        {"model": "dae", "noise_level": -0.1},
    ],
    ids=repr,
)
def test_bad_model_config_raises_a_one_line_vaelab_error(options):
    with pytest.raises(VaelabError) as error:
        ModelConfig(**options)
    assert "\n" not in str(error.value)


def test_model_config_normalises_lists_to_tuples():
    config = ModelConfig(data_shape=[1, 8, 8], hidden_dims=[16, 8], conv_channels=[4])
    assert config.data_shape == (1, 8, 8)
    assert config.hidden_dims == (16, 8)
    assert config == ModelConfig(data_shape=(1, 8, 8), hidden_dims=(16, 8), conv_channels=(4,))
    hash(config)


def test_build_model_uses_the_registry():
    for kind, factory in MODELS.items():
        assert type(build_model(tiny(kind, "mlp"))) is factory
    assert MODELS["vae"] is vaelab.VAE
    assert issubclass(vaelab.DenoisingAutoencoder, vaelab.Autoencoder)


@pytest.mark.parametrize(
    "bad", [torch.tensor([0.5, 1.2]), torch.tensor([-0.5, 0.2]), torch.tensor([float("nan"), 0.5])]
)
def test_bernoulli_models_reject_data_outside_unit_interval(bad):
    for kind in KINDS:
        with pytest.raises(VaelabError, match="my data"):
            build(tiny(kind, "mlp")).check_data(bad.view(1, 1, 1, 2), where="my data")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_every_model_rejects_non_finite_data(value):
    x = torch.full((1, 1, 8, 8), 0.5)
    x[0, 0, 3, 3] = value
    for likelihood in LIKELIHOODS:
        with pytest.raises(VaelabError, match="NaN or infinite"):
            build(tiny("vae", "mlp", likelihood)).check_data(x, where="data")


def test_gaussian_models_accept_any_finite_data():
    build(tiny("vae", "mlp", "gaussian-learned")).check_data(torch.randn(4, 1, 8, 8) * 9, where="x")


# --- small helpers ---------------------------------------------------------------------------


def test_slerp_ends_and_norm():
    z_a, z_b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(z_a, z_b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path[0], z_a)
    torch.testing.assert_close(path[-1], z_b)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))  # stays on the unit circle
    torch.testing.assert_close(path[2], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    parallel = slerp(z_a, 2 * z_a, torch.linspace(0, 1, 3))  # degenerate: falls back to lerp
    torch.testing.assert_close(parallel[1], torch.tensor([1.5, 0.0]))


def test_bits_per_dim():
    assert bits_per_dim(64 * math.log(2.0), (1, 8, 8)) == pytest.approx(1.0)
    assert bits_per_dim(0.0, (3, 4, 4)) == 0.0


def test_conv_level_sizes():
    assert conv_level_sizes(28, 28, 4) == [(28, 28), (14, 14), (7, 7)]
    assert conv_level_sizes(8, 8, 4) == [(8, 8), (4, 4)]
    assert conv_level_sizes(64, 64, 4) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert conv_level_sizes(64, 64, 2) == [(64, 64), (32, 32), (16, 16)]
    assert conv_level_sizes(30, 45, 4) == [(30, 45), (15, 22), (7, 11)]
    assert conv_level_sizes(5, 7, 4) == [(5, 7)]


def test_noise_options_are_only_checked_for_the_model_that_uses_them() -> None:
    # A VAE ignores the denoising options, so an out-of-range level there is no error.
    assert ModelConfig(model="vae", noise="mask", noise_level=5.0).noise_level == 5.0
    with pytest.raises(VaelabError, match=r"use \[0, 1\]"):
        ModelConfig(model="dae", noise="mask", noise_level=5.0)


# --- the model parts: a prior without a closed-form KL, bfloat16 autocast ---------------------


class NoClosedFormPrior(StandardNormalPrior):
    """N(0, I) that does not tell its closed-form KL: the bound must estimate it."""

    def kl_per_dim(self, posterior, *, y=None):
        return None


def test_kl_falls_back_to_monte_carlo_without_a_closed_form() -> None:
    model = build(tiny("vae", "mlp")).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        posterior = model.encode(x)
        z = posterior.rsample(k=50_000, generator=fixed_generator())
        closed = model.kl(posterior, z)
        model.prior = NoClosedFormPrior(4)
        estimate = model.kl(posterior, z)
        log_ratio = posterior.log_prob(z) - model.prior.log_prob(z)
        torch.testing.assert_close(estimate, log_ratio.mean(0))
        assert torch.all((estimate - closed).abs() < 5 * log_ratio.std(0) / math.sqrt(50_000))
        # the training loss at k = 1 uses the single sample's log q - log p
        terms = model.loss(x, generator=fixed_generator())
        z1 = posterior.rsample(generator=fixed_generator())
        one = (posterior.log_prob(z1) - model.prior.log_prob(z1)).mean()
        torch.testing.assert_close(terms.kl, one)


def test_evaluate_estimates_the_kl_without_a_closed_form() -> None:
    model = build(tiny("vae", "mlp")).eval()
    x = torch.bernoulli(torch.rand(20, 1, 8, 8), generator=fixed_generator())
    closed = vaelab.evaluate(model, x, k=3000, chunk=1000)
    model.prior = NoClosedFormPrior(4)
    estimated = vaelab.evaluate(model, x, k=3000, chunk=1000)
    assert estimated.kl_per_dim is None and closed.kl_per_dim is not None
    assert estimated.kl == pytest.approx(closed.kl, abs=0.05)
    assert estimated.nll == pytest.approx(closed.nll, abs=1e-4)  # the same weights


@pytest.mark.parametrize("objective_k", [("elbo", 1), ("iwae", 4)], ids=["elbo", "iwae4"])
def test_densities_stay_float32_under_bfloat16_autocast(objective_k) -> None:
    objective, k = objective_k
    model = build(tiny("vae", "mlp", objective=objective, k=k))
    x = torch.rand(5, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.encoder(x).dtype == torch.bfloat16  # the network itself runs in bfloat16
        posterior = model.encode(x)
        assert posterior.mu.dtype == torch.float32  # its outputs, cast: fp32 samples
        terms = model.loss(x, generator=fixed_generator())
        log_w = model.log_weights(x, 3, generator=fixed_generator())
        z = posterior.rsample(k=3, generator=fixed_generator())
        parts = model.importance_terms(x, z, posterior)
    assert {t.dtype for t in (terms.total, terms.recon, terms.kl, log_w)} == {torch.float32}
    assert {parts.log_px_z.dtype, parts.log_pz.dtype, parts.log_qz.dtype} == {torch.float32}


def test_figures_name_each_model_by_its_title() -> None:
    titles = {name: cls.title for name, cls in MODELS.items()}
    assert titles == {
        "vae": "VAE",
        "ae": "Autoencoder",
        "dae": "Denoising autoencoder",
        "vqvae": "VQ-VAE",
        "btcvae": "β-TCVAE",
        "factorvae": "FactorVAE",
        "dipvae": "DIP-VAE",
        "cvae": "Conditional VAE",
        "m2": "Semi-supervised VAE (M2)",
        "hvae": "Hierarchical VAE",
        "ladder": "Ladder VAE",
    }


def test_the_elbo_and_its_gradients_are_bit_for_bit_the_direct_formula(batch) -> None:
    """The VAE loss, through the prior, posterior and likelihood objects, equals the
    pytorch/examples formulation computed in the order vaelab always has (KL before the
    sample), to the last bit: runs of earlier versions repeat exactly."""
    model = build(tiny("vae", "mlp"))
    terms = model.loss(batch, generator=fixed_generator())
    terms.total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    mu, logvar = model.encoder(batch).chunk(2, dim=1)
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(-1).mean()
    eps = torch.randn(mu.shape, generator=fixed_generator())
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decoder(z)
    bce = F.binary_cross_entropy_with_logits(logits, batch, reduction="none")
    recon = bce.flatten(1).sum(dim=1).mean()
    (recon + 1.0 * kl).backward()
    assert torch.equal(terms.total, recon + kl)
    for name, p in model.named_parameters():
        assert torch.equal(grads[name], p.grad), name
