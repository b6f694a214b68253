"""What is particular to the disentangling objectives: beta-TCVAE's decomposition and its
estimator, FactorVAE's discriminator and its optimiser, DIP-VAE's penalty, capacity annealing.
(The model contract of tests/test_models.py runs over all of them too.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.test_training import assert_identical, spy_on_vae_loss, weights, without_timing

from vaelab import VaelabError, train
from vaelab.models import ModelConfig, build_model
from vaelab.models.btcvae import decompose_kl
from vaelab.models.dipvae import dip_penalty, posterior_covariance
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.factorvae import permute_dims
from vaelab.training.checkpoint import load_training_state, resolve_checkpoint
from vaelab.training.metrics import read_metrics
from vaelab.training.schedules import learning_rate


def config(kind: str, **options) -> ModelConfig:
    values = dict(
        model=kind,
        data_shape=(1, 8, 8),
        latent_dim=3,
        hidden_dims=(32,),
        dataset_size=1000,
        discriminator_hidden=(32, 32),
    )
    return ModelConfig(**(values | options))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_posterior(batch: int = 6, dim: int = 3, seed: int = 0) -> DiagonalGaussian:
    g = generator(seed)
    mu = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    logvar = torch.randn(batch, dim, generator=g, dtype=torch.float64) * 0.5
    return DiagonalGaussian(mu, logvar)


# --- beta-TCVAE ------------------------------------------------------------------------------


def test_the_decomposition_adds_up_to_the_monte_carlo_kl():
    posterior = random_posterior()
    z = posterior.rsample(generator=generator(1))
    log_pz = -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(dim=1)
    terms = decompose_kl(posterior, z, log_pz, dataset_size=500)
    parts = terms.mutual_info + terms.total_correlation + terms.dimensionwise_kl
    torch.testing.assert_close(parts, (posterior.log_prob(z) - log_pz).mean())


def test_the_minibatch_weighted_estimator_matches_its_formula_written_out():
    """log q(z_i) ~= log sum_j q(z_i|x_j) - log(N M) (Chen et al. 2018, sec. 4.1), and the same
    per dimension for log q(z_i,d), by a plain loop over the examples."""
    posterior = random_posterior(batch=5, dim=2)
    z = posterior.rsample(generator=generator(2))
    n, m = 300, 5
    log_pz = torch.zeros(m, dtype=torch.float64)
    terms = decompose_kl(posterior, z, log_pz, dataset_size=n)
    mu, sd = posterior.mu, posterior.std
    log_qz, log_prod = [], []
    for i in range(m):
        dens = [
            torch.distributions.Normal(mu[j], sd[j]).log_prob(z[i]).exp() for j in range(m)
        ]  # each (D,)
        per_dim = torch.stack(dens)  # (M, D)
        log_qz.append(torch.log(per_dim.prod(dim=1).sum() / (n * m)))
        log_prod.append(torch.log(per_dim.sum(dim=0) / (n * m)).sum())
    log_qz, log_prod = torch.stack(log_qz), torch.stack(log_prod)
    torch.testing.assert_close(terms.mutual_info, (posterior.log_prob(z) - log_qz).mean())
    torch.testing.assert_close(terms.total_correlation, (log_qz - log_prod).mean())
    torch.testing.assert_close(terms.dimensionwise_kl, log_prod.mean())


def test_btcvae_weights_each_term_and_equals_the_elbo_at_unit_weights(batch):
    x = batch[:16]
    losses = {}
    for weights_ in [(1.0, 1.0, 1.0), (1.0, 6.0, 1.0), (0.0, 6.0, 2.0)]:
        alpha, beta, gamma = weights_
        model = build_model(config("btcvae", alpha=alpha, beta=beta, gamma=gamma))
        torch.manual_seed(0)
        model.load_state_dict(build_model(config("btcvae")).state_dict())
        losses[weights_] = model.loss(x, generator=generator(3))
    # the same weights and the same samples: the terms differ only by their weights
    posterior = model.encode(x)
    z = posterior.rsample(generator=generator(3))
    terms = decompose_kl(posterior, z, model.prior.log_prob(z), 1000)
    recon = losses[(1.0, 1.0, 1.0)].recon
    for (alpha, beta, gamma), loss in losses.items():
        expected = (
            alpha * terms.mutual_info
            + beta * terms.total_correlation
            + gamma * terms.dimensionwise_kl
        )
        torch.testing.assert_close(loss.total, recon + expected, rtol=1e-5, atol=1e-4)
    elbo = recon + (posterior.log_prob(z) - model.prior.log_prob(z)).mean()
    torch.testing.assert_close(losses[(1.0, 1.0, 1.0)].total, elbo, rtol=1e-5, atol=1e-4)


def test_btcvae_needs_the_dataset_size_and_takes_it_from_the_data(tmp_path, tiny_run, batch):
    model = build_model(config("btcvae", dataset_size=None))
    with pytest.raises(VaelabError, match="dataset_size"):
        model.loss(batch)
    with pytest.raises(VaelabError, match="below the batch size"):
        build_model(config("btcvae", dataset_size=4)).loss(batch)
    train(tiny_run(epochs=1, model={"model": "btcvae"}), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    from vaelab import DataConfig, load_data

    n_train = len(load_data(DataConfig(dataset="digits"), progress=False).train)
    assert saved["model"]["dataset_size"] == n_train
    assert saved["model"]["gamma"] == 1.0  # the default, stated in the saved config


# --- FactorVAE -------------------------------------------------------------------------------


def test_permute_dims_shuffles_each_dimension_on_its_own():
    z = torch.arange(200.0).view(50, 4)
    permuted = permute_dims(z, generator=generator(4))
    for d in range(4):  # every column holds the same values, in another order
        assert torch.equal(permuted[:, d].sort().values, z[:, d])
        assert not torch.equal(permuted[:, d], z[:, d])
    rows = {tuple(r) for r in z.tolist()}
    assert sum(tuple(r) in rows for r in permuted.tolist()) < 5  # rows are broken up


def test_the_vae_loss_never_trains_the_discriminator_and_its_loss_trains_nothing_else(batch):
    model = build_model(config("factorvae"))
    terms = model.loss(batch, generator=generator(5))
    terms.total.backward(retain_graph=True)
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if "discriminator" not in n)
    model.zero_grad(set_to_none=True)
    terms.auxiliary.backward()
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if "discriminator" not in n)


def test_the_discriminator_learns_the_total_correlation_of_dependent_codes():
    """Trained on its own loss, the discriminator tells correlated codes from their permutation
    (TC estimate clearly positive, loss well under log 2); on independent codes it cannot."""
    estimates = {}
    for name, mix in (("dependent", 1.0), ("independent", 0.0)):
        model = build_model(config("factorvae", latent_dim=2, discriminator_hidden=(64, 64)))
        optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
        g = generator(6)
        for _ in range(300):
            a, b = torch.randn(256, 2, generator=g).unbind(1)
            z = torch.stack([a, mix * a + (1 - mix) * b + 0.1 * torch.randn(256, generator=g)], 1)
            loss = model.discriminator_loss(z, generator=g)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            estimates[name] = (model.total_correlation(z).mean().item(), loss.item())
    tc, loss = estimates["dependent"]
    assert tc > 1.0 and loss < 0.5 * math.log(2)  # the true TC of this pair is about 2.3 nats
    tc, loss = estimates["independent"]
    assert abs(tc) < 0.3 and loss > 0.6


def test_factorvae_has_two_optimiser_groups_and_the_discriminators_keeps_its_rate(
    tmp_path, tiny_run, monkeypatch
):
    """Under a cosine schedule the VAE's rate decays and the discriminator's stays at
    --discriminator-lr with Adam betas (0.5, 0.9); a crash mid-run resumes bit for bit."""
    options = dict(
        model={"model": "factorvae", "discriminator_hidden": [16, 16], "discriminator_lr": 2e-4},
        optim={"schedule": "cosine"},
    )
    result = train(tiny_run(epochs=3, **options), tmp_path / "straight", progress=False)
    model = result.model
    groups = model.optimizer_groups()
    assert len(groups) == 2 and groups[1]["params"] == list(model.discriminator.parameters())
    records = read_metrics(tmp_path / "straight")
    config = tiny_run(epochs=3, **options)
    steps = records[-1]["step"]
    cosine = learning_rate(steps - 1, steps, config.optim)  # the last step's, near 0
    assert records[-1]["lr"] == pytest.approx(cosine)  # the VAE's group (logged: group 0)
    saved = load_training_state(resolve_checkpoint(tmp_path / "straight", prefer="last"))
    main, discriminator = saved.optimizer["param_groups"]
    assert main["lr"] == pytest.approx(cosine) and discriminator["lr"] == 2e-4
    assert discriminator["weight_decay"] == 0.0
    assert list(discriminator["betas"]) == [0.5, 0.9] and discriminator["fixed_lr"] is True

    def crash(n, terms):
        if n == 20:
            raise KeyboardInterrupt
        return terms

    spy_on_vae_loss(monkeypatch, crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(epochs=3, **options), tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    train(tiny_run(epochs=3, **options), tmp_path / "resumed", resume=True, progress=False)
    assert_identical(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    assert without_timing(read_metrics(tmp_path / "resumed")) == without_timing(records)


def test_factorvae_loss_is_the_elbo_plus_gamma_times_the_discriminators_estimate(batch):
    model = build_model(config("factorvae", beta=2.0, gamma=7.0))
    terms = model.loss(batch, kl_scale=0.5, generator=generator(9))
    posterior = model.encode(batch)
    z = posterior.rsample(generator=generator(9))
    tc = model.total_correlation(z).mean()
    expected = terms.recon + 0.5 * (2.0 * terms.kl + 7.0 * tc)
    torch.testing.assert_close(terms.total, expected)
    assert terms.objective is not terms.total  # the discriminator's loss is added to the step
    torch.testing.assert_close(terms.objective, terms.total + terms.auxiliary)


# --- DIP-VAE ---------------------------------------------------------------------------------


def test_dip_penalty_by_hand():
    mu = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    logvar = torch.log(torch.full((4, 2), 0.5))
    posterior = DiagonalGaussian(mu, logvar)
    cov_i = posterior_covariance(posterior, "i")
    torch.testing.assert_close(cov_i, torch.tensor([[0.5, 0.0], [0.0, 2.0]]))
    cov_ii = posterior_covariance(posterior, "ii")
    torch.testing.assert_close(cov_ii, torch.tensor([[1.0, 0.0], [0.0, 2.5]]))
    # (0.5 - 1)^2 + (2 - 1)^2 = 1.25 on the diagonal; no off-diagonal covariance
    torch.testing.assert_close(dip_penalty(cov_i, 3.0, 2.0), torch.tensor(2.5))
    skewed = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    torch.testing.assert_close(dip_penalty(skewed, 3.0, 2.0), torch.tensor(3.0 * 0.5))
    assert dip_penalty(torch.eye(3), 10.0, 100.0).item() == 0.0


def test_dipvae_defaults_and_loss(batch):
    assert config("dipvae").lambda_d == 100.0  # 10 lambda_od for type i
    assert config("dipvae", dip_type="ii").lambda_d == 10.0
    assert config("dipvae", lambda_d=3.0).lambda_d == 3.0
    model = build_model(config("dipvae", dip_type="ii", lambda_od=2.0, lambda_d=5.0))
    terms = model.loss(batch, generator=generator(7))
    posterior = model.encode(batch)
    penalty = dip_penalty(posterior_covariance(posterior, "ii"), 2.0, 5.0)
    torch.testing.assert_close(terms.total, terms.recon + terms.kl + penalty)


# --- capacity annealing and the options' checks ---------------------------------------------


def test_capacity_holds_the_kl_at_a_target_that_the_warmup_raises(batch):
    model = build_model(config("vae", capacity=10.0, capacity_gamma=100.0))
    for scale in (0.0, 0.5, 1.0):
        terms = model.loss(batch, kl_scale=scale, generator=generator(8))
        expected = terms.recon + 100.0 * (terms.kl - 10.0 * scale).abs()
        torch.testing.assert_close(terms.total, expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "btcvae", "objective": "iwae", "k": 5}, "ELBO with one sample"),
        ({"model": "vae", "capacity": 5.0, "k": 2}, "ELBO with one sample"),
        ({"model": "btcvae", "capacity": 5.0}, "--capacity is for --model vae"),
        ({"model": "btcvae", "alpha": -1.0}, "--alpha must be zero or a positive"),
        ({"model": "factorvae", "gamma": float("nan")}, "--gamma must be"),
        ({"model": "dipvae", "dip_type": "iii"}, "unknown DIP-VAE type 'iii'"),
        ({"model": "factorvae", "discriminator_lr": 0.0}, "--discriminator-lr must be positive"),
        ({"model": "factorvae", "discriminator_hidden": (0,)}, "discriminator hidden sizes"),
        ({"model": "btcvae", "dataset_size": 0}, "dataset_size must be a positive"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    kind, rest = options["model"], {k: v for k, v in options.items() if k != "model"}
    with pytest.raises(VaelabError, match=message) as raised:
        config(kind, **rest)
    assert "\n" not in str(raised.value)


def test_capacity_needs_the_warmup_that_raises_it():
    from vaelab import RunConfig

    with pytest.raises(VaelabError, match="give it --kl-warmup") as raised:
        RunConfig.from_dict({"model": {"capacity": 25.0}})
    assert "\n" not in str(raised.value)
    config_ = RunConfig.from_dict({"model": {"capacity": 25.0}, "train": {"kl_warmup_epochs": 3}})
    assert config_.model.capacity == 25.0


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--model", "factorvae", "--discriminator-hidden", "16", "16", "--gamma", "10",
             "--discriminator-lr", "3e-4"],
            {"model": "factorvae", "gamma": 10.0, "discriminator_hidden": [16, 16],
             "discriminator_lr": 3e-4},
        ),
        (
            ["--model", "btcvae", "--alpha", "0.5", "--beta", "6", "--gamma", "2"],
            {"model": "btcvae", "alpha": 0.5, "beta": 6.0, "gamma": 2.0},
        ),
        (
            ["--model", "dipvae", "--dip-type", "ii", "--lambda-od", "4"],
            {"model": "dipvae", "dip_type": "ii", "lambda_od": 4.0, "lambda_d": 4.0},
        ),
        (
            ["--model", "vae", "--capacity", "12", "--capacity-gamma", "50",
             "--kl-warmup", "1"],
            {"model": "vae", "capacity": 12.0, "capacity_gamma": 50.0},
        ),
    ],
    ids=["factorvae", "btcvae", "dipvae", "capacity"],
)  # fmt: skip
def test_the_command_line_trains_each_objective(tmp_path, flags, expected):
    from vaelab.cli.app import main

    run = tmp_path / "run"
    code = main(
        ["train", *flags, "--dataset", "digits", "--epochs", "1", "--latent-dim", "4",
         "--hidden-dims", "32", "--out", str(run), "--quiet", "--no-figures"]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((run / "config.json").read_text())["model"]
    assert {key: saved[key] for key in expected} == expected
    assert read_metrics(run)[-1]["epoch"] == 1
