"""The VQ-VAE and its parts: the quantiser (straight-through gradients, the codebook's two ways
of learning, dead-entry restarts), the gated PixelCNN prior over code grids (causal, normalised,
able to learn), and the model's bound and configuration."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from vaelab import VaelabError
from vaelab.analysis.evaluate import evaluate
from vaelab.models import VQVAE, ModelConfig, build_model
from vaelab.models.code_priors import UniformCodePrior
from vaelab.models.config import code_grid
from vaelab.models.pixelcnn import PixelCNNConfig, PixelCNNPrior
from vaelab.models.quantizer import (
    EMA_DECAY,
    VectorQuantizer,
    code_bits,
    perplexity,
    usage_share,
)

K = 8  # codebook entries of the tiny models
D = 4  # values per entry


def tiny_vqvae(seed: int = 0, **options) -> VQVAE:
    values = dict(
        model="vqvae",
        data_shape=(1, 8, 8),
        conv_channels=(8, 16),
        codebook_size=K,
        code_dim=D,
    )
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**(values | options)))
    assert isinstance(model, VQVAE)
    return model


def generator(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat(z_e: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B h w, D), in the quantiser's order."""
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def started_quantizer(codebook: torch.Tensor, update: str) -> VectorQuantizer:
    """A quantiser past its start step with the given entries (K, D), every entry well used
    (so that no restart interferes), and EMA statistics of one vector per entry."""
    quantizer = VectorQuantizer(len(codebook), codebook.shape[1], update=update)
    with torch.no_grad():
        quantizer.codebook.copy_(codebook)
        quantizer.usage.fill_(1000.0)
        quantizer.started.fill_(True)
        if update == "ema":
            quantizer.ema_count.fill_(1.0)
            quantizer.ema_sum.copy_(codebook)
    return quantizer


def is_a_row_of(entries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(E,) bool: whether each of entries (E, D) equals some row of rows (N, D) exactly."""
    return (entries[:, None, :] == rows[None, :, :]).all(-1).any(-1)


# --- straight-through gradients -----------------------------------------------------------------


def test_gradients_reach_every_encoder_parameter_through_the_quantiser(batch) -> None:
    # No commitment loss and an EMA codebook: the only path from the loss to the encoder is
    # the straight-through estimator.
    model = tiny_vqvae(commitment=0.0, codebook_update="ema")
    model.loss(batch, generator=generator()).total.backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "quantizer.codebook" not in dict(model.named_parameters())  # EMA: a buffer


def test_the_quantised_grid_has_the_identity_jacobian_in_the_encoder_output() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(5, 3).eval()
    z_e = torch.randn(1, 3, 2, 2)
    jacobian = torch.autograd.functional.jacobian(lambda z: quantizer(z).z_q, z_e)
    torch.testing.assert_close(jacobian.reshape(12, 12), torch.eye(12), rtol=0, atol=0)
    # ...while the values are the chosen entries, not z_e
    out = quantizer(z_e)
    torch.testing.assert_close(flat(out.z_q), quantizer.codebook[out.indices.flatten()])
    assert not torch.allclose(out.z_q, z_e)


def test_the_codebook_loss_moves_only_the_codebook_and_the_commitment_only_the_encoder() -> None:
    torch.manual_seed(0)
    quantizer = started_quantizer(torch.randn(4, 3), "loss").eval()
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = quantizer(z_e)
    out.codebook_loss.sum().backward(retain_graph=True)
    assert z_e.grad is None or not z_e.grad.any()
    quantizer.codebook.grad = None
    out.commitment_loss.sum().backward()
    assert quantizer.codebook.grad is None or not quantizer.codebook.grad.any()
    assert z_e.grad.abs().sum() > 0


# --- the codebook update --------------------------------------------------------------------


def test_ema_update_follows_the_papers_formula_in_a_simple_case() -> None:
    # Two entries, each taking two vectors; with equal counts the Laplace smoothing cancels and
    # e_i = (g m_i + (1 - g) sum_i) / (g n_i + (1 - g) count_i), g the decay (appendix A.1).
    codebook = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    quantizer = started_quantizer(codebook, "ema").train()
    vectors = torch.tensor([[1.0, 0.0], [1.0, 2.0], [9.0, 9.0], [9.0, 11.0]])
    z_e = vectors.T.reshape(1, 2, 2, 2)  # (B, D, h, w) with the grid in raster order
    assert torch.equal(flat(z_e), vectors)
    out = quantizer(z_e, learn=True)
    assert out.indices.flatten().tolist() == [0, 0, 1, 1]
    g = EMA_DECAY
    sums = torch.tensor([[2.0, 2.0], [18.0, 20.0]])
    expected = (g * codebook + (1 - g) * sums) / (g * 1.0 + (1 - g) * 2.0)
    torch.testing.assert_close(quantizer.codebook, expected)
    torch.testing.assert_close(quantizer.ema_count, torch.full((2,), g + (1 - g) * 2.0))
    torch.testing.assert_close(quantizer.ema_sum, g * codebook + (1 - g) * sums)
    # the returned grid is the entries after this step's update
    torch.testing.assert_close(flat(out.z_q), expected[[0, 0, 1, 1]])
    assert torch.equal(out.codebook_loss, torch.zeros(1))


def test_ema_update_moves_each_used_entry_toward_its_vectors(batch) -> None:
    model = tiny_vqvae(codebook_update="ema").train()
    model.loss(batch, generator=generator())  # the start step
    quantizer = model.quantizer
    quantizer.usage.fill_(1000.0)  # no restarts: only the average moves the entries
    before = quantizer.codebook.clone()
    with torch.no_grad():
        vectors = flat(model.encoder(batch))
        indices = quantizer.nearest(vectors)
        model.quantize(batch, learn=True, generator=generator())
    used = indices.unique()
    assert len(used) >= 2
    for i in used:
        mean = vectors[indices == i].mean(0)
        assert (quantizer.codebook[i] - mean).norm() < (before[i] - mean).norm(), int(i)
    unused = torch.ones(K, dtype=torch.bool)
    unused[used] = False
    # an unused entry's average keeps its sum and count decaying together: it barely moves
    torch.testing.assert_close(quantizer.codebook[unused], before[unused], rtol=1e-4, atol=1e-6)


def test_loss_update_moves_each_used_entry_toward_its_vectors() -> None:
    torch.manual_seed(0)
    codebook = torch.randn(6, 3)
    quantizer = started_quantizer(codebook, "loss").train()
    z_e = torch.randn(2, 3, 3, 3) * 2
    vectors = flat(z_e)
    indices = quantizer.nearest(vectors)
    used = indices.unique()
    assert 2 <= len(used) < 6  # some entries used, and at least one not
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.01)
    quantizer(z_e).codebook_loss.sum().backward()
    grad = quantizer.codebook.grad.clone()
    optimizer.step()
    for i in range(6):
        assigned = vectors[indices == i]
        if len(assigned) == 0:
            assert torch.equal(grad[i], torch.zeros(3))
            assert torch.equal(quantizer.codebook[i], codebook[i])
            continue
        # d/de sum ||v - e||^2 = 2 n (e - mean)
        torch.testing.assert_close(grad[i], 2 * len(assigned) * (codebook[i] - assigned.mean(0)))
        mean = assigned.mean(0)
        assert (quantizer.codebook[i] - mean).norm() < (codebook[i] - mean).norm()


# --- nearest entries, lookup and the flat codes ------------------------------------------


def test_nearest_is_the_argmin_of_the_distances() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 5)
    quantizer.codebook.data.normal_()
    vectors = torch.randn(200, 5)
    expected = torch.cdist(vectors, quantizer.codebook).argmin(dim=1)
    assert torch.equal(quantizer.nearest(vectors), expected)
    assert torch.equal(quantizer.nearest(quantizer.codebook.detach()), torch.arange(16))


def test_lookup_places_each_entry_at_its_position() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(5, 3)
    indices = torch.randint(5, (2, 3, 4))
    grid = quantizer.lookup(indices)
    assert grid.shape == (2, 3, 3, 4)
    for b, i, j in itertools.product(range(2), range(3), range(4)):
        assert torch.equal(grid[b, :, i, j], quantizer.codebook[indices[b, i, j]])


def test_indices_and_codes_round_trip() -> None:
    model = tiny_vqvae().eval()
    h, w = model.grid
    indices = torch.randint(K, (5, h, w), generator=generator())
    z = model.codes_of(indices)
    assert z.shape == (5, model.config.latent_dim)
    assert torch.equal(model.indices_of(z), indices)
    # (K, B, D) codes, as the bound passes them
    assert torch.equal(model.indices_of(z.expand(3, *z.shape)), indices.expand(3, *indices.shape))
    # a point near an entry goes to that entry
    assert torch.equal(model.indices_of(z + 1e-4), indices)


def test_the_code_of_x_is_its_quantised_grid(batch) -> None:
    model = tiny_vqvae()
    model.loss(batch, generator=generator())  # start the codebook on encoder outputs
    model.eval()
    indices = model.code_indices(batch)
    assert indices.shape == (32, *model.grid) and indices.dtype == torch.int64
    with torch.no_grad():
        # equal up to the rounding of the straight-through z_e + (e - z_e)
        torch.testing.assert_close(model.encode(batch).mean, model.codes_of(indices))
        torch.testing.assert_close(model.reconstruct(batch), model.decode(model.codes_of(indices)))
        assert torch.equal(model.indices_of(model.encode(batch).mean), indices)


# --- starting and restarting entries -------------------------------------------------------


def test_encoding_in_training_mode_changes_nothing(batch) -> None:
    """Only the training loss updates the codebook: encode, reconstruct and interpolate are
    pure in either mode (a callback that encodes mid-training cannot move the codebook)."""
    model = tiny_vqvae().train()
    model.loss(batch, generator=generator())  # past the start step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(batch)
    model.reconstruct(batch)
    model.interpolate(batch[0], batch[1], steps=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_a_non_finite_encoder_output_never_enters_the_codebook() -> None:
    quantizer = started_quantizer(torch.randn(K, 3), "ema").train()
    z_e = torch.randn(4, 3, 4, 4)
    z_e[0, :, 0, 0] = float("inf")
    z_e[1, 1, 2, 3] = float("nan")
    quantizer(z_e, learn=True, generator=generator())
    for name in ("codebook", "ema_sum", "ema_count", "usage"):
        assert getattr(quantizer, name).isfinite().all(), name


def test_the_first_training_step_puts_every_entry_on_an_encoder_output(batch) -> None:
    model = tiny_vqvae(codebook_update="loss")
    before = model.quantizer.codebook.detach().clone()
    with torch.no_grad():
        vectors = flat(model.encoder(batch))
    model.loss(batch, generator=generator())
    codebook = model.quantizer.codebook.detach()
    assert bool(model.quantizer.started)
    assert is_a_row_of(codebook, vectors).all()
    assert not is_a_row_of(before, vectors).any()
    # in eval mode nothing starts
    fresh = tiny_vqvae(codebook_update="loss").eval()
    fresh.loss(batch)
    assert not bool(fresh.quantizer.started)
    assert torch.equal(fresh.quantizer.codebook, before)


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_dead_entries_restart_on_encoder_outputs(update) -> None:
    torch.manual_seed(0)
    quantizer = started_quantizer(torch.randn(K, 3) + 100.0, update).train()  # far from data
    dead = torch.zeros(K, dtype=torch.bool)
    dead[[1, 4, 6]] = True
    quantizer.usage[dead] = 0.0
    z_e = torch.randn(4, 3, 4, 4)  # 64 vectors
    before = quantizer.codebook.detach().clone()
    quantizer(z_e, learn=True, generator=generator())
    codebook = quantizer.codebook.detach()
    assert is_a_row_of(codebook[dead], flat(z_e)).all()
    assert not is_a_row_of(codebook[~dead], flat(z_e)).any()
    if update == "loss":  # the live entries are the optimiser's alone
        assert torch.equal(codebook[~dead], before[~dead])
    assert (quantizer.usage[dead] >= 1.0).all()  # a fair share: not dead again at once
    if update == "ema":
        assert torch.equal(quantizer.ema_sum[dead], codebook[dead])
        assert torch.equal(quantizer.ema_count[dead], torch.ones(3))


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_few_vectors_per_step_do_not_restart_a_healthy_codebook(update) -> None:
    """Steps of fewer vectors than entries (64 vectors, 128 entries) leave every entry's
    average under one vector per step; only entries unused for a while restart."""
    torch.manual_seed(0)
    quantizer = VectorQuantizer(128, 3, update=update).train()
    z_e = torch.randn(4, 3, 4, 4)
    quantizer(z_e, learn=True, generator=generator())  # the start: entries on the 64 vectors
    started = quantizer.codebook.detach().clone()
    for step in range(5):
        quantizer(z_e, learn=True, generator=generator(step))
    moved = (quantizer.codebook.detach() - started).abs().amax(dim=1) > 1.0
    assert int(moved.sum()) == 0  # nobody restarted within 5 steps of the start


def test_an_entry_used_in_this_step_is_never_restarted() -> None:
    quantizer = started_quantizer(torch.randn(K, 3), "loss").train()
    quantizer.usage.zero_()  # every entry's average says "dead"
    z_e = torch.randn(4, 3, 4, 4)
    used = torch.unique(quantizer.nearest(flat(z_e)))
    before = quantizer.codebook.detach().clone()
    quantized = quantizer(z_e, learn=True, generator=generator())
    assert torch.equal(quantizer.codebook.detach()[used], before[used])
    torch.testing.assert_close(quantized.z_q, quantizer.lookup(quantized.indices).detach())


def test_a_fitted_prior_stays_out_of_the_models_weights(batch) -> None:
    model = tiny_vqvae()
    weights = model.state_dict()
    model.set_prior(PixelCNNPrior(PixelCNNConfig(codebook_size=K, grid=model.grid, layers=1)))
    assert model.state_dict().keys() == weights.keys()  # its files are its own (RUN/prior/)
    fresh = tiny_vqvae(seed=1)
    fresh.set_prior(PixelCNNPrior(PixelCNNConfig(codebook_size=K, grid=model.grid, layers=1)))
    fresh.load_state_dict(weights)  # strict: the attached prior's entries are not missing
    assert isinstance(fresh.prior, PixelCNNPrior)
    with pytest.raises(RuntimeError, match="Missing"):
        fresh.load_state_dict({k: v for k, v in weights.items() if "decoder" not in k})


def test_a_vqvae_runs_in_float64(batch) -> None:
    model = tiny_vqvae().double().train()
    x = batch[:4].double()
    assert model.loss(x, generator=generator()).total.dtype == torch.float64
    assert model.eval().reconstruct(x).dtype == torch.float64


def test_restarts_are_reproducible_with_a_seeded_generator() -> None:
    torch.manual_seed(0)
    quantizer = started_quantizer(torch.randn(K, 3) + 100.0, "loss").train()
    quantizer.usage.zero_()  # every entry dead
    z_e = torch.randn(4, 3, 4, 4)
    a, b, c = (copy.deepcopy(quantizer) for _ in range(3))
    a(z_e, learn=True, generator=generator(7))
    b(z_e, learn=True, generator=generator(7))
    c(z_e, learn=True, generator=generator(8))
    assert torch.equal(a.codebook, b.codebook)
    assert not torch.equal(a.codebook, c.codebook)


# --- usage measures ------------------------------------------------------------------------


def test_perplexity_and_usage_share_known_answers() -> None:
    uniform = torch.arange(K).repeat(5)
    assert perplexity(uniform, K) == pytest.approx(K)
    assert usage_share(uniform, K) == 1.0
    one = torch.full((3, 4, 4), 2)
    assert perplexity(one, K) == pytest.approx(1.0)
    assert usage_share(one, K) == 1 / K
    two = torch.tensor([0, 0, 0, 5])  # p = (3/4, 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(two, K) == pytest.approx(math.exp(entropy))
    assert usage_share(two, K) == 2 / K
    assert code_bits((7, 7), 128) == pytest.approx(-49 * math.log(128))


# --- the PixelCNN prior: causal, normalised, and able to learn ------------------------------


def causal_jacobian(prior: PixelCNNPrior, y: torch.Tensor | None) -> torch.Tensor:
    """(h, w, h, w): how much logits at (i, j) depend on the input at (r, c)."""
    h, w = prior.grid
    embedded = torch.randn(1, prior.config.channels, h, w, generator=generator())
    jacobian = torch.autograd.functional.jacobian(
        lambda e: prior.logits_of_embedded(e, y), embedded
    )  # (1, K, h, w, 1, C, h, w)
    return jacobian.abs().sum(dim=(0, 1, 4, 5))


@pytest.mark.parametrize("classes", [0, 3])
def test_pixelcnn_logits_see_exactly_the_codes_before_them(classes) -> None:
    h, w = 5, 6
    torch.manual_seed(0)
    config = PixelCNNConfig(codebook_size=4, grid=(h, w), channels=8, layers=4, classes=classes)
    prior = PixelCNNPrior(config)
    y = torch.tensor([1]) if classes else None
    dependence = causal_jacobian(prior, y)
    for i, j in itertools.product(range(h), range(w)):
        for r, c in itertools.product(range(h), range(w)):
            if (r, c) >= (i, j):  # the position itself and every later one, in raster order
                assert dependence[i, j, r, c] == 0, ((i, j), (r, c))
        # no blind spot: the left neighbour, and the row above up to two columns to the right
        before = [(i, j - 1), (i - 1, j - 1), (i - 1, j), (i - 1, j + 1), (i - 1, j + 2)]
        for r, c in before:
            if 0 <= r < h and 0 <= c < w:
                assert dependence[i, j, r, c] > 0, ((i, j), (r, c))
    assert dependence[4, 2, 0, 0] > 0  # four layers reach four rows up


def test_a_conditional_pixelcnn_needs_its_labels_and_uses_them() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=3, grid=(2, 2), channels=8, classes=2))
    indices = torch.randint(3, (4, 2, 2), generator=generator())
    with pytest.raises(VaelabError, match="pass the labels"):
        prior.log_prob_indices(indices)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(
        prior.log_prob_indices(indices, y=zeros), prior.log_prob_indices(indices, y=ones)
    )


@pytest.mark.parametrize("classes", [0, 2])
def test_pixelcnn_probabilities_sum_to_one(classes) -> None:
    torch.manual_seed(0)
    config = PixelCNNConfig(codebook_size=3, grid=(2, 2), channels=8, layers=3, classes=classes)
    prior = PixelCNNPrior(config).eval()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(81, 2, 2)
    labels = range(classes) if classes else [None]
    with torch.no_grad():
        for label in labels:
            y = None if label is None else torch.full((81,), label)
            log_p = prior.log_prob_indices(grids, y=y)
            assert log_p.shape == (81,)
            assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-5)
            assert float(log_p.max() - log_p.min()) > 0.01  # not simply uniform


def test_pixelcnn_rejects_grids_of_another_size() -> None:
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=3, grid=(2, 2)))
    with pytest.raises(VaelabError, match=r"\(B, 2, 2\)"):
        prior.log_prob_indices(torch.zeros(1, 3, 2, dtype=torch.long))


def test_pixelcnn_samples_are_reproducible_grids_of_codes() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=5, grid=(3, 4), channels=8, layers=2))
    a = prior.sample_indices(6, generator=generator(1))
    b = prior.sample_indices(6, generator=generator(1))
    c = prior.sample_indices(6, generator=generator(2))
    assert a.shape == (6, 3, 4) and a.dtype == torch.int64
    assert a.min() >= 0 and a.max() < 5
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_a_pixelcnn_trained_on_one_grid_samples_that_grid() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=4, grid=(3, 3), channels=16, layers=3))
    target = torch.tensor([[0, 1, 2], [3, 3, 0], [2, 1, 1]])
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    with torch.no_grad():
        start = float(prior.nll(target[None]))
    for _ in range(300):
        loss = prior.nll(target.expand(4, 3, 3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start > 9 * math.log(4) * 0.5  # about uniform at first
    with torch.no_grad():
        assert float(prior.nll(target[None])) < 0.01
    samples = prior.sample_indices(16, generator=generator())
    assert torch.equal(samples, target.expand(16, 3, 3))


# --- the VQ-VAE's bound and its prior ------------------------------------------------------


def started_model(batch: torch.Tensor, **options) -> VQVAE:
    model = tiny_vqvae(**options)
    model.loss(batch, generator=generator())  # entries on encoder outputs
    return model.eval()


def test_the_bound_under_the_uniform_prior(batch) -> None:
    model = started_model(batch)
    x = batch[:5]
    h, w = model.grid
    with torch.no_grad():
        log_w = model.log_weights(x, 4, generator=generator())
        z_q = model.encode(x).mean
        log_px_z = model.likelihood.log_prob(model.decode_params(z_q, x), x)
    assert log_w.shape == (4, 5)
    assert torch.equal(log_w, log_w[:1].expand(4, 5))  # a point mass: every sample the same
    torch.testing.assert_close(log_w[0], log_px_z - h * w * math.log(K))
    assert isinstance(model.prior, UniformCodePrior)


def test_the_bound_under_a_fitted_prior(batch) -> None:
    model = started_model(batch)
    x = batch[:5]
    torch.manual_seed(1)
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=K, grid=model.grid, channels=8, layers=2))
    model.set_prior(prior)
    assert model.prior is prior
    with torch.no_grad():
        log_w = model.log_weights(x, 3, generator=generator())
        indices = model.code_indices(x)
        log_px_z = model.likelihood.log_prob(model.decode_params(model.codes_of(indices), x), x)
        expected = log_px_z + prior.log_prob_indices(indices)
    assert torch.equal(log_w, log_w[:1].expand(3, 5))
    torch.testing.assert_close(log_w[0], expected)
    assert not torch.allclose(log_w[0], log_px_z - math.prod(model.grid) * math.log(K))
    # samples come from the fitted prior from now on
    codes = model.draw_codes(4, generator=generator(5))
    assert torch.equal(codes, model.codes_of(prior.sample_indices(4, generator=generator(5))))


@pytest.mark.parametrize(
    ("size", "grid"), [(K + 1, None), (K, (3, 3))], ids=["codebook size", "grid"]
)
def test_set_prior_refuses_a_prior_of_another_model(size, grid) -> None:
    model = tiny_vqvae()
    config = PixelCNNConfig(codebook_size=size, grid=grid or model.grid, channels=8, layers=1)
    with pytest.raises(VaelabError, match="this VQ-VAE has"):
        model.set_prior(PixelCNNPrior(config))
    assert isinstance(model.prior, UniformCodePrior)


def test_evaluate_gives_the_exact_bound_with_one_sample(batch) -> None:
    model = started_model(batch)
    x = batch[:10]
    result = evaluate(model, x, k=50)
    assert result.k == 1
    assert result.point_posterior
    assert result.nll == pytest.approx(result.recon + result.kl, rel=1e-6)
    assert result.kl == pytest.approx(math.prod(model.grid) * math.log(K), rel=1e-6)
    assert result.active_units is None
    indices = model.code_indices(x)
    assert result.measures == pytest.approx(
        {"codebook_usage": usage_share(indices, K), "perplexity": perplexity(indices, K)}
    )
    assert 0 < result.measures["codebook_usage"] <= 1
    assert "uniform" in result.prior


def test_loss_terms(batch) -> None:
    model = started_model(batch)
    with torch.no_grad():
        out = model.quantize(batch)
        z_q = out.z_q.flatten(1)
        recon = model.likelihood.nll(model.decode_params(z_q, batch), batch).mean()
        terms = model.loss(batch)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.total, recon + 0.25 * out.commitment_loss.mean())
    assert float(terms.kl) == pytest.approx(math.prod(model.grid) * math.log(K))


# --- the configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"objective": "iwae"},
        {"k": 4},
        {"autoregressive": "local"},
        {"codebook_size": 0},
        {"code_dim": -1},
        {"codebook_size": 2.5},
        {"commitment": -0.1},
        {"commitment": float("nan")},
        {"codebook_update": "adam"},
    ],
    ids=repr,
)
def test_bad_vqvae_config_raises_a_one_line_vaelab_error(options) -> None:
    with pytest.raises(VaelabError) as error:
        ModelConfig(model="vqvae", **options)
    assert "\n" not in str(error.value)


def test_vqvae_latent_size_is_derived_from_the_grid() -> None:
    config = ModelConfig(model="vqvae", data_shape=(1, 28, 28), latent_dim=2, architecture="mlp")
    assert code_grid(config) == (7, 7)
    assert config.latent_dim == config.code_dim * 7 * 7 == 784
    assert config.architecture == "conv"
    assert ModelConfig(model="vqvae", data_shape=(1, 28, 28), code_dim=3).latent_dim == 3 * 49
    tiny = tiny_vqvae()
    assert tiny.grid == (4, 4) and tiny.config.latent_dim == D * 16
    # the VQ-VAE options do not constrain other models
    assert ModelConfig(model="vae", codebook_size=0, commitment=-1.0).latent_dim == 2
