"""Learned priors (a mixture of Gaussians, the VampPrior), and the evaluation protocol's fixes:
last/ is scored without a validation split, and the test binarisation is drawn on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tests.test_cli import run_cli
from torch import distributions as td

import vaelab
from vaelab import VaelabError
from vaelab.data import draw_binary
from vaelab.models import ModelConfig, build_model
from vaelab.models.learned_priors import MixtureOfGaussiansPrior, VampPrior, mixture_log_prob
from vaelab.runs import open_run


def vamp_vae(**options) -> vaelab.Autoencoder:
    torch.manual_seed(0)
    values = dict(
        model="vae",
        prior="vamp",
        pseudo_inputs=7,
        data_shape=(1, 8, 8),
        latent_dim=3,
        hidden_dims=(32,),
    )
    return build_model(ModelConfig(**(values | options)))


def generator(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixture_log_prob_is_torch_distributions_mixture() -> None:
    torch.manual_seed(1)
    prior = MixtureOfGaussiansPrior(4, 6)
    with torch.no_grad():
        prior.logvars.normal_(0, 0.5)
        prior.logits.normal_()
    reference = td.MixtureSameFamily(
        td.Categorical(logits=prior.logits),
        td.Independent(td.Normal(prior.means, torch.exp(0.5 * prior.logvars)), 1),
    )
    z = torch.randn(9, 5, 4) * 2
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))


def test_mixture_log_prob_of_one_component_is_its_gaussian() -> None:
    mu, logvar = torch.randn(1, 3), torch.randn(1, 3)
    z = torch.randn(10, 3)
    expected = td.Normal(mu[0], torch.exp(0.5 * logvar[0])).log_prob(z).sum(-1)
    torch.testing.assert_close(mixture_log_prob(z, mu, logvar, torch.zeros(1)), expected)


def test_mixture_samples_follow_the_weights_and_repeat_with_a_seed() -> None:
    prior = MixtureOfGaussiansPrior(2, 2)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
        prior.logvars.fill_(-4.0)
        prior.logits.copy_(torch.tensor([0.0, math.log(3.0)]))  # weights 1/4 and 3/4
    z = prior.sample(20_000, generator=generator())
    assert (z[:, 0] > 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    assert z[:, 1].std().item() == pytest.approx(math.exp(-2.0), rel=0.05)
    torch.testing.assert_close(
        prior.sample(5, generator=generator()), prior.sample(5, generator=generator())
    )


def test_vamp_prior_is_the_mean_of_the_pseudo_input_posteriors() -> None:
    """log p(z) = log (1/K) sum_k q(z|u_k), with q the encoder's Gaussian at the pseudo-inputs
    (kept in [0, 1] by a hardtanh for a Bernoulli model), Tomczak & Welling (2018), eq. 9."""
    model = vamp_vae()
    prior = model.prior
    assert isinstance(prior, VampPrior)
    with torch.no_grad():
        prior.pseudo_inputs.uniform_(-0.5, 1.5)  # some outside [0, 1], clipped by the hardtanh
        z = torch.randn(4, 6, 3)
        inputs = prior.pseudo_inputs.clamp(0, 1)
        mu, logvar = model.encoder(inputs).chunk(2, dim=1)
        per_component = td.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z[..., None, :]).sum(-1)
        expected = torch.logsumexp(per_component, dim=-1) - math.log(7)
        torch.testing.assert_close(prior.log_prob(z), expected)


def test_vamp_prior_trains_its_pseudo_inputs_and_the_encoder_through_it() -> None:
    model = vamp_vae()
    x = torch.rand(5, 1, 8, 8)
    terms = model.loss(x, generator=generator())
    terms.total.backward()
    assert model.prior.pseudo_inputs.grad is not None
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_vamp_loss_kl_is_log_q_minus_log_p_at_the_draw() -> None:
    model = vamp_vae()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        terms = model.loss(x, generator=generator())
        posterior = model.encode(x)
        z = posterior.rsample(generator=generator())
        expected = (posterior.log_prob(z) - model.prior.log_prob(z)).mean()
    torch.testing.assert_close(terms.kl, expected)


def test_vamp_components_are_cached_outside_autograd_until_a_weight_changes() -> None:
    model = vamp_vae()
    calls = []
    original = model.gaussian_posterior

    def counting(x):
        calls.append(len(x))
        return original(x)

    model.prior.attach(counting, model)
    z = torch.randn(3, 3)
    with torch.no_grad():
        first = model.prior.log_prob(z)
        model.prior.log_prob(z)
    assert calls == [7]  # encoded once for both calls
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.loss(torch.rand(4, 1, 8, 8)).total.backward()
    optimizer.step()
    with torch.no_grad():
        after = model.prior.log_prob(z)
    assert len(calls) == 3  # the loss (with autograd) and the changed weights
    fresh = vamp_vae()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, fresh.prior.log_prob(z))
    assert not torch.allclose(first, after)


def test_vamp_samples_come_from_the_pseudo_input_posteriors() -> None:
    model = vamp_vae(pseudo_inputs=1).eval()
    with torch.no_grad():
        z = model.draw_codes(20_000, generator=generator())
        component = model.gaussian_posterior(model.prior.inputs())
    torch.testing.assert_close(z.mean(0), component.mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), component.std[0], atol=0.03, rtol=0.03)
    again = model.draw_codes(3, generator=generator())
    torch.testing.assert_close(model.draw_codes(3, generator=generator()), again)


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_a_learned_prior_is_saved_evaluated_and_named(prior, tmp_path) -> None:
    config = vaelab.RunConfig.from_dict(
        {
            "model": {
                "model": "vae",
                "latent_dim": 3,
                "hidden_dims": [32],
                "prior": prior,
                "pseudo_inputs": 6,
                "components": 4,
            },
            "data": {"dataset": "digits"},
            "train": {"epochs": 2, "batch_size": 64},
        }
    )
    vaelab.train(config, tmp_path / "run", progress=False)
    model = vaelab.load(tmp_path / "run")
    assert not model.gaussian_prior
    x = torch.bernoulli(torch.rand(30, 1, 8, 8), generator=generator())
    result = vaelab.evaluate(model, x, k=200)
    name = (
        "a VampPrior of 6 pseudo-inputs" if prior == "vamp" else "a learned mixture of 4 Gaussians"
    )
    assert result.prior == name
    assert result.kl_per_dim is None  # no closed form: the KL is a Monte Carlo estimate
    assert result.nll <= result.neg_elbo + 0.05


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model": "ae", "prior": "vamp"}, "--prior vamp is for --model vae"),
        ({"model": "cvae", "prior": "mog", "classes": 3}, "--prior mog is for --model vae"),
        ({"prior": "flat"}, "unknown prior 'flat'"),
        ({"prior": "vamp", "pseudo_inputs": 0}, "--pseudo-inputs must be a positive"),
        ({"prior": "mog", "components": 1.5}, "--components must be a positive"),
    ],
)
def test_bad_prior_options_are_one_line_errors(options, message) -> None:
    with pytest.raises(VaelabError, match=message):
        ModelConfig(**options)


def train_vamp(capsys, run, *, latent_dim: int) -> None:
    """`vaelab train` of a VampPrior VAE of 5 pseudo-inputs on digits, one epoch."""
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--prior",
        "vamp",
        "--pseudo-inputs",
        "5",
        "--latent-dim",
        latent_dim,
        "--epochs",
        "1",
        "--out",
        run,
        "--no-progress",
        "--no-figures",
    )
    assert code == 0, err


def test_sample_cli_draws_from_the_learned_prior(capsys, tmp_path) -> None:
    run = tmp_path / "vamp"
    train_vamp(capsys, run, latent_dim=3)
    code, _, err = run_cli(
        capsys, "sample", run, "--n", "4", "--seed", "3", "--out", tmp_path / "a.png"
    )
    assert code == 0, err
    assert (tmp_path / "a.png").is_file()  # the draws themselves: the explorer's test below


def test_the_explorer_samples_from_the_learned_prior(capsys, tmp_path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaelab.explorer import create_app

    run = tmp_path / "vamp"
    train_vamp(capsys, run, latent_dim=2)
    client = TestClient(create_app([run]), base_url="http://localhost")
    reply = client.post("/api/runs/vamp/sample", json={"n": 6, "seed": 4}).json()
    model = vaelab.load(run)
    with torch.no_grad():
        expected = model.draw_codes(6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(torch.tensor(reply["z"]), expected)
    assert len(reply["images"]) == 6


# --- the protocol ---------------------------------------------------------------------------


def train_digits(tmp_path, name: str, val_fraction: float) -> vaelab.RunConfig:
    config = vaelab.RunConfig.from_dict(
        {
            "model": {"model": "vae", "latent_dim": 2, "hidden_dims": [16]},
            "data": {"dataset": "digits", "val_fraction": val_fraction},
            "train": {"epochs": 3, "batch_size": 128, "kl_warmup_epochs": 3},
        }
    )
    vaelab.train(config, tmp_path / name, progress=False)
    return config


def test_eval_scores_last_without_a_validation_split_and_says_so(capsys, tmp_path) -> None:
    train_digits(tmp_path, "noval", 0.0)
    train_digits(tmp_path, "val", 0.1)
    code, out, err = run_cli(capsys, "eval", tmp_path / "noval", "--k", "5", "--limit", "20")
    assert code == 0, err
    assert "(last checkpoint)" in out
    records = json.loads((tmp_path / "noval" / "eval.json").read_text())
    assert list(records) == ["last/test/k=5/first-20"]
    code, out, err = run_cli(capsys, "eval", tmp_path / "val", "--k", "5", "--limit", "20")
    assert code == 0, err
    assert "(best checkpoint)" in out
    code, out, err = run_cli(
        capsys, "eval", tmp_path / "noval", "--k", "5", "--limit", "20", "--checkpoint", "best"
    )
    assert code == 0 and "(best checkpoint)" in out
    # the other commands and the library open a run by the same rule
    assert open_run(tmp_path / "noval").checkpoint_name == "last"
    assert open_run(tmp_path / "val").checkpoint_name == "best"
    assert open_run(tmp_path / "noval", checkpoint="best").checkpoint_name == "best"
    code, out, err = run_cli(capsys, "pack", tmp_path / "noval", tmp_path / "b", "--no-onnx")
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["checkpoint"] == "last"
    code, out, err = run_cli(capsys, "info", tmp_path / "noval", "--json")
    assert code == 0 and json.loads(out)["checkpoint"].endswith("last"), out


def test_the_test_binarisation_is_the_cpu_draw_of_the_seed() -> None:
    """The binary images are drawn on the CPU from the seed, whatever the model's device: the
    same test set everywhere. Scoring that draw directly gives the same figures."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,)))
    x = torch.rand(12, 1, 8, 8)
    drawn = draw_binary(x, generator=torch.Generator().manual_seed(9))
    binarised = vaelab.evaluate(model, x, k=10, seed=9, binarize=True)
    direct = vaelab.evaluate(model, drawn, k=10, seed=9)
    assert binarised.nll == direct.nll and binarised.recon == direct.recon
    assert F.mse_loss(drawn, x.round()).item() > 0  # a random draw, not a threshold
