"""The autoregressive decoder terms (linear and local): causal, normalised, and consistent
between scoring (teacher forcing) and decoding (one pixel at a time)."""

from __future__ import annotations

import itertools

import pytest
import torch

import vaelab
from vaelab import ModelConfig, build_model
from vaelab.analysis.evaluate import evaluate

KINDS = ["linear", "local", "local-z"]


def ar_model(
    kind: str = "linear", likelihood: str = "bernoulli", shape=(1, 3, 3), seed: int = 0
) -> vaelab.VAE:
    torch.manual_seed(seed)
    sigma = 0.3 if likelihood == "gaussian" else None
    model = build_model(
        ModelConfig(
            data_shape=shape,
            latent_dim=2,
            hidden_dims=(8,),
            likelihood=likelihood,
            sigma=sigma,
            autoregressive=kind,
        )
    )
    with torch.no_grad():  # a context that matters (its last layer starts at zero)
        for parameter in model.context.parameters():
            parameter.normal_(0.0, 0.3)  # large enough to matter, small enough to stay stable
    return model.eval()


def test_linear_context_sees_exactly_the_values_before_each_one() -> None:
    model = ar_model(shape=(2, 3, 3))
    x = torch.rand(1, 18)
    base = torch.zeros(1, 18)
    jacobian = torch.autograd.functional.jacobian(lambda v: model.context(v, base)[0], x)[:, 0]
    assert torch.count_nonzero(jacobian.triu()) == 0  # d out_j / d x_i = 0 for i >= j
    assert torch.count_nonzero(jacobian.tril(-1)) == 18 * 17 // 2


@pytest.mark.parametrize("kind", ["local", "local-z"])
def test_local_context_sees_the_patch_above_and_to_the_left(kind: str) -> None:
    """Pixel (r, c) of a 9x9 image depends on the pixels before it in row order that lie in
    its 7x7 window: rows r-3..r-1 at columns c-3..c+3, and row r at columns c-3..c-1."""
    model = ar_model(kind, shape=(2, 9, 9))
    x = torch.rand(1, 2, 9, 9)
    base = torch.randn(1, 2, 9, 9)
    jacobian = torch.autograd.functional.jacobian(lambda v: model.context(v, base)[0].flatten(), x)[
        :, 0
    ]
    depends = jacobian.view(2, 9, 9, 2, 9, 9).abs().sum(dim=(0, 3)) > 0  # (r, c, r', c')
    for r, c in itertools.product(range(9), repeat=2):
        expected = torch.zeros(9, 9, dtype=torch.bool)
        expected[max(r - 3, 0) : r, max(c - 3, 0) : c + 4] = True
        expected[r, max(c - 3, 0) : c] = True
        assert torch.equal(depends[r, c], expected), (r, c)


@pytest.mark.parametrize("kind", KINDS)
def test_bernoulli_decoder_is_a_normalised_distribution(kind: str) -> None:
    """Summed over all 2^9 binary images, p(x|z) is 1 for any z."""
    model = ar_model(kind)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9))).view(-1, 1, 3, 3)
    z = torch.randn(1, 2).expand(len(images), 2)
    with torch.no_grad():
        log_p = -model.likelihood.nll(model.decode_params(z, images), images)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("shape", [(1, 3, 3), (2, 5, 4)])
def test_decoding_is_consistent_with_scoring(kind: str, likelihood: str, shape) -> None:
    """decode(z) chooses each value as the mean given the values chosen before it, so scoring
    its own output with teacher forcing reproduces it."""
    model = ar_model(kind, likelihood, shape)
    z = torch.randn(5, 2)
    with torch.no_grad():
        x_hat = model.decode(z)
        again = model.likelihood.mean(model.decode_params(z, x_hat))
    torch.testing.assert_close(again, x_hat, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(x_hat, model.likelihood.mean(model.decoder(z)))  # context used


@pytest.mark.parametrize("kind", KINDS)
def test_importance_weights_include_the_context(kind: str) -> None:
    """The bound's reconstruction term is the teacher-forced likelihood."""
    model = ar_model(kind)
    x = torch.bernoulli(torch.full((40, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(1))
    result = evaluate(model, x, k=2000)
    with torch.no_grad():
        posterior = model.encode(x)
        z = posterior.mu.unsqueeze(1) + posterior.std.unsqueeze(1) * torch.randn(40, 4000, 2)
        logits = model.decode_params(z.flatten(0, 1), x.repeat_interleave(4000, 0))
        recon = model.likelihood.nll(logits, x.repeat_interleave(4000, 0)).mean()
    assert result.recon == pytest.approx(recon.item(), abs=0.02)


def test_linear_context_is_refused_for_large_images() -> None:
    with pytest.raises(vaelab.VaelabError, match="at most 4096 values"):
        ModelConfig(data_shape=(3, 64, 64), autoregressive="linear")
    with pytest.raises(vaelab.VaelabError, match="unknown autoregressive decoder 'pixelcnn'"):
        ModelConfig(autoregressive="pixelcnn")


def test_logits_need_the_data() -> None:
    with pytest.raises(vaelab.VaelabError, match="depends on x"):
        ar_model().decode_params(torch.zeros(1, 2))
