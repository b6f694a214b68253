"""The conditional VAE and M2: their bounds checked against the formulas, the conditions, and
semi-supervised training (labelled images chosen, streamed and resumed)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import vaelab
from vaelab import DataConfig, RunConfig, VaelabError
from vaelab.data.labelled import keep_labels
from vaelab.data.splits import Split
from vaelab.models import ModelConfig, build_model
from vaelab.models.bounds import log_mean_exp
from vaelab.models.conditions import observed_mask, parse_observed
from vaelab.models.priors import ConditionalGaussianPrior


def tiny(kind: str = "m2", **options) -> ModelConfig:
    values = dict(
        model=kind,
        data_shape=(1, 8, 8),
        latent_dim=4,
        hidden_dims=(32,),
        classes=3,
        dataset_size=100,
    )
    return ModelConfig(**(values | options))


def build(config: ModelConfig, seed: int = 0) -> vaelab.Autoencoder:
    torch.manual_seed(seed)
    return build_model(config)


def seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- M2's bound -------------------------------------------------------------------------------


def test_m2_unlabelled_bound_is_the_labelled_bound_under_q_plus_the_entropy(batch) -> None:
    """-U(x) = sum_y q(y|x) (-L(x, y)) - H(q(y|x)) (Kingma et al. 2014, eq. 7), the sum over
    y done exactly: checked against -L computed label by label at the same draws of z."""
    model = build(tiny())
    x = batch[:6]
    k, b = 3, len(x)
    terms = model.loss(x, y=torch.full((b,), -1), generator=seeded())
    every_y = torch.arange(k).repeat_interleave(b)  # the draws the loss makes, class by class
    bound = model.negative_bound(x.repeat(k, 1, 1, 1), every_y, generator=seeded()).view(k, b)
    q = model.predict_proba(x).T  # (K, B)
    entropy = -(q * q.log()).sum(0)
    expected = ((q * bound).sum(0) - entropy).mean()
    torch.testing.assert_close(terms.total, expected)
    torch.testing.assert_close(q.sum(0), torch.ones(b))  # q(y|x) sums to one over y


def test_m2_with_every_label_is_a_cvae_plus_a_classifier_loss(batch) -> None:
    m2 = build(tiny(classifier_weight=0.7))
    cvae = build(tiny("cvae"))
    missing, unexpected = cvae.load_state_dict(m2.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("classifier.") for k in unexpected)
    x, y = batch[:8], torch.arange(8) % 3
    cross_entropy = F.cross_entropy(m2.classify(x), y)
    m2_total = m2.loss(x, y=y, generator=seeded()).total
    cvae_total = cvae.loss(x, y=y, generator=seeded()).total
    torch.testing.assert_close(m2_total, cvae_total + math.log(3) + 0.7 * cross_entropy)


def test_m2_weighs_labelled_and_unlabelled_images_by_their_shares(batch) -> None:
    """loss = (N_l / N) mean(-L) + (N_u / N) mean(-U) + w mean(-log q(y|x)), with the run's
    sizes (a batch of each kind, as the trainer draws them), not the batch's own shares."""
    model = build(tiny(labelled_size=10, dataset_size=100, classifier_weight=0.3))
    x = batch[:6]
    y = torch.tensor([-1, -1, -1, -1, 0, 2])
    cross_entropy = F.cross_entropy(model.classify(x[4:]), y[4:])
    mixed = model.loss(x, y=y, generator=seeded()).total
    generator = seeded()  # the loss draws z for its labelled images first
    labelled = model.negative_bound(x[4:], y[4:], generator=generator).mean()
    unlabelled = model.loss(x[:4], y=y[:4], generator=generator).total
    torch.testing.assert_close(mixed, 0.1 * labelled + 0.9 * unlabelled + 0.3 * cross_entropy)


def test_m2_default_classifier_weight_is_alpha_per_labelled_image() -> None:
    """Kingma et al.'s alpha = 0.1 N on the mean over the N_l labelled images: 0.1 N / N_l."""
    assert build(tiny(labelled_size=10, dataset_size=100)).classifier_weight == pytest.approx(1.0)
    assert build(tiny(labelled_size=100, dataset_size=54_000)).classifier_weight == 54.0
    assert build(tiny(labelled_size=None)).classifier_weight == 0.1  # every label: 0.1 N / N
    assert build(tiny(classifier_weight=3.0, labelled_size=10)).classifier_weight == 3.0


def test_m2_marginal_likelihood_sums_over_the_classes(batch) -> None:
    """log p(x) = log sum_y p(y) p(x|y): the marginal log-weights, stratified over y, equal
    the per-class conditional ones at the same draws."""
    model = build(tiny()).eval()
    x = batch[:5]
    with torch.no_grad():
        marginal = model.log_weights(x, 7, generator=seeded())  # ceil(7 / 3) = 3 per class
        generator = seeded()
        per_class = [
            model.log_weights(x, 3, y=torch.full((5,), c), generator=generator) for c in range(3)
        ]
    assert marginal.shape == (9, 5)
    conditional = torch.stack([log_mean_exp(w) for w in per_class])  # log p(x|y), (K, B)
    expected = torch.logsumexp(conditional - math.log(3), dim=0)
    torch.testing.assert_close(log_mean_exp(marginal), expected)


def test_m2_infers_missing_labels_and_samples_labels_from_the_prior(batch) -> None:
    model = build(tiny()).eval()
    x = batch[:4]
    predicted = model.classify(x).argmax(-1)
    torch.testing.assert_close(model.encode(x).mean, model.encode(x, predicted).mean)
    given = torch.tensor([2, -1, 0, -1])
    expected = torch.where(given >= 0, given, predicted)
    torch.testing.assert_close(model.encode(x, given).mean, model.encode(x, expected).mean)
    generator = seeded()
    drawn = torch.randint(3, (16,), generator=generator)
    z = torch.randn(16, 4, generator=generator)
    torch.testing.assert_close(model.sample(16, generator=seeded()), model.decode(z, drawn))
    assert model.measures(x, given) == {
        "accuracy": float((predicted[given >= 0] == given[given >= 0]).float().mean())
    }


# --- the conditional VAE ----------------------------------------------------------------------


def test_cvae_decodes_each_label_differently_and_checks_labels(batch) -> None:
    model = build(tiny("cvae")).eval()
    z = torch.randn(3, 4)
    images = [model.decode(z, torch.full((3,), c)) for c in range(3)]
    assert not torch.allclose(images[0], images[1])
    for bad, message in [
        (None, "pass y"),
        (torch.tensor([0, 3, 1]), "label 3 is out of range"),
        (torch.tensor([0, -1, 1]), "label -1 is out of range"),
        (torch.tensor([0.5, 1, 1]), "whole numbers"),
        (torch.tensor([0, 1]), "one condition per image"),
    ]:
        with pytest.raises(VaelabError, match=message) as error:
            model.loss(batch[:3], y=bad)
        assert "\n" not in str(error.value)


def test_conditional_prior_kl_is_the_gaussian_formula() -> None:
    model = build(tiny("cvae", conditional_prior=True))
    assert isinstance(model.prior, ConditionalGaussianPrior)
    with torch.no_grad():  # move the prior away from its near-N(0, I) start
        for p in model.prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    posterior = model.encode(x, y)
    c = model.prior_condition(x, y)
    closed = model.prior.kl(posterior, y=c)
    q = torch.distributions.Normal(posterior.mu, posterior.std)
    p = model.prior.gaussian(c)
    reference = torch.distributions.kl_divergence(q, torch.distributions.Normal(p.mu, p.std))
    torch.testing.assert_close(closed, reference.sum(-1))
    assert not torch.allclose(p.mu[0], p.mu[1])  # the prior depends on the label


def test_observed_cvae_scores_only_the_unobserved_pixels_and_keeps_the_observed_ones() -> None:
    model = build(tiny("cvae", observe="left", conditional_prior=True)).eval()
    x = torch.rand(4, 1, 8, 8).round()
    z = model.encode(x).sample(generator=seeded())
    logits = model.decode_params(z, x)
    right = F.binary_cross_entropy_with_logits(logits[..., 4:], x[..., 4:], reduction="none")
    torch.testing.assert_close(-model.log_likelihood(logits, x), right.flatten(1).sum(1))
    completions = model.complete(x, 5, generator=seeded())
    assert completions.shape == (5, 4, 1, 8, 8)
    assert torch.equal(completions[..., :4], x[..., :4].expand(5, -1, -1, -1, -1))
    assert not torch.allclose(completions[0, ..., 4:], completions[1, ..., 4:])
    with pytest.raises(VaelabError, match="--observe"):
        build(tiny("cvae")).complete(x, 2)


def test_observed_quadrants_parse_to_one_canonical_name() -> None:
    assert parse_observed("left") == "top-left,bottom-left"
    assert parse_observed("Bottom-Left, top-left") == "top-left,bottom-left"
    assert parse_observed("3-quadrants") == "top-left,top-right,bottom-left"
    assert parse_observed("1-quadrant") == "bottom-left"
    mask = observed_mask("top-left,bottom-right", 5, 4)
    assert mask.sum() == 2 * 2 + 3 * 2 and mask[0, 0] and mask[4, 3] and not mask[0, 3]
    for bad in ("middle", "left,right", ""):
        with pytest.raises(VaelabError) as error:
            parse_observed(bad)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "vae", "observe": "left"}, "--observe is for --model cvae"),
        ({"model": "m2", "conditional_prior": True}, "--conditional-prior is for --model cvae"),
        ({"model": "cvae", "classifier_weight": 1.0}, "--classifier-weight is for --model m2"),
        ({"model": "m2", "classifier_weight": -1.0}, "classifier-weight"),
        ({"model": "m2", "objective": "iwae", "k": 5}, "an m2 trains on the ELBO"),
        ({"model": "cvae", "autoregressive": "local"}, "--autoregressive is not available"),
    ],
)
def test_bad_conditional_options_are_one_line_errors(options, message) -> None:
    with pytest.raises(VaelabError, match=message) as error:
        ModelConfig(**({"classes": 3} | options))
    assert "\n" not in str(error.value)


def test_a_label_model_needs_labelled_data() -> None:
    with pytest.raises(VaelabError, match="needs data with labels"):
        build_model(ModelConfig(model="cvae", classes=0))


# --- semi-supervised data and training --------------------------------------------------------


def test_keep_labels_is_balanced_seeded_and_hides_the_rest() -> None:
    y = torch.arange(300) % 3
    split = Split(x=torch.zeros(300, 1, 2, 2), y=y)
    kept = keep_labels(split, 30, classes=3, seed=4)
    known = kept.y >= 0
    assert int(known.sum()) == 30
    assert torch.equal(kept.y[known], y[known])
    assert torch.bincount(kept.y[known]).tolist() == [10, 10, 10]
    assert torch.equal(keep_labels(split, 30, classes=3, seed=4).y, kept.y)
    assert not torch.equal(keep_labels(split, 30, classes=3, seed=5).y, kept.y)
    for n, message in [(31, "not divisible"), (600, "more than the 300"), (0, "positive")]:
        with pytest.raises(VaelabError, match=message):
            keep_labels(split, n, classes=3, seed=0)
    with pytest.raises(VaelabError, match="has none"):
        keep_labels(Split(x=torch.zeros(3, 1, 2, 2), y=None), 3, classes=3, seed=0)


def _m2_run(epochs: int, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"model": "m2", "latent_dim": 2, "hidden_dims": [32]},
            "data": {"dataset": "digits", "labelled": 50},
            "optim": {"lr": 3e-3},
            "train": {"epochs": epochs, "batch_size": 128, "device": "cpu", **train},
        }
    )


def test_semi_supervised_run_keeps_its_labelled_images_and_resumes_bit_for_bit(tmp_path) -> None:
    straight = vaelab.train(_m2_run(3), tmp_path / "straight", progress=False)
    record = json.loads((tmp_path / "straight" / "labelled.json").read_text())
    data = vaelab.load_data(DataConfig(dataset="digits", labelled=50))
    known = (data.train.y >= 0).nonzero().flatten()
    assert record["labelled"] == 50 and record["train_positions"] == known.tolist()
    assert torch.bincount(torch.tensor(record["labels"])).tolist() == [5] * 10
    config = straight.model.config
    assert config.classes == 10 and config.labelled_size == 50
    assert config.dataset_size == len(data.train)
    assert "val/accuracy" in straight.metrics  # the classifier, measured each epoch
    # epochs pass over the unlabelled images only: steps = ceil(N_u / B) per epoch
    assert straight.metrics["step"] == 3 * math.ceil((len(data.train) - 50) / 128)
    vaelab.train(_m2_run(2), tmp_path / "resumed", progress=False)
    resumed = vaelab.train(_m2_run(3), tmp_path / "resumed", resume=True, progress=False)
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_labelled_is_for_m2_only(tmp_path) -> None:
    config = RunConfig.from_dict(
        {
            "model": {"model": "cvae"},
            "data": {"dataset": "digits", "labelled": 50},
            "train": {"epochs": 1, "device": "cpu"},
        }
    )
    with pytest.raises(VaelabError, match="--labelled is for the semi-supervised --model m2"):
        vaelab.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_m2_takes_int32_labels_and_eval_reports_the_samples_it_drew(batch) -> None:
    model = build(tiny()).eval()
    x, y = batch[:6], torch.tensor([0, -1, 2, -1, 1, 0])
    with torch.no_grad():
        as_int64 = model.loss(x, y=y, generator=seeded()).total
        as_int32 = model.loss(x, y=y.int(), generator=seeded()).total
    torch.testing.assert_close(as_int32, as_int64)
    with pytest.raises(VaelabError, match="whole numbers"):
        model.loss(x, y=y.float())
    result = vaelab.evaluate(model, x, k=7, progress=False)  # ceil(7 / 3) = 3 per class
    assert result.k == 9
