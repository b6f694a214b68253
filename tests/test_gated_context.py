"""The gated PixelCNN decoder term: causal with no blind spot, one pass of its stacks per image
whatever K, decoding that follows the scored conditionals, and a VAE that trains with it."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab import ModelConfig, RunConfig, build_model
from vaelab.analysis.evaluate import evaluate
from vaelab.models import autoregressive
from vaelab.models.autoregressive import GatedContext
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint

TINY_VAE = ModelConfig(
    model="vae",
    autoregressive="gated",
    ar_layers=2,
    data_shape=(1, 8, 8),
    latent_dim=4,
    hidden_dims=(32,),
)


def gated(shape: tuple[int, int, int], layers: int, seed: int = 0) -> GatedContext:
    """A context with random weights, its output layer included (it starts at zero)."""
    torch.manual_seed(seed)
    context = GatedContext(shape, layers=layers)
    with torch.no_grad():
        for parameter in context.parameters():
            parameter.normal_(0.0, 0.3)
    return context


@pytest.mark.parametrize(("shape", "layers"), [((1, 6, 5), 2), ((3, 5, 4), 1), ((3, 5, 4), 3)])
def test_each_offset_sees_exactly_the_pixels_before_it_in_reach(shape, layers: int) -> None:
    """Every channel of pixel (r, c) depends on every channel of the pixels before it within
    `layers` rows above and `layers` columns to either side (row r: only those to its left),
    and on nothing else: not on the pixel itself nor on any later one. Unlike a stack of masked
    3 x 3 convolutions, no pixel above and to the right is left out (no blind spot)."""
    channels, height, width = shape
    context = gated(shape, layers)
    x = torch.rand(1, *shape)
    base = torch.randn(1, *shape)
    jacobian = torch.autograd.functional.jacobian(lambda v: context(v, base)[0], x)[:, :, :, 0]
    depends = jacobian != 0  # (C, H, W, C, H, W): output value, input value
    for r, c in itertools.product(range(height), range(width)):
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[max(r - layers, 0) : r, max(c - layers, 0) : c + layers + 1] = True
        expected[r, max(c - layers, 0) : c] = True
        for out_channel, in_channel in itertools.product(range(channels), repeat=2):
            assert torch.equal(depends[out_channel, r, c, in_channel], expected), (r, c)
        if r > 0 and c + 1 < width:  # the pixel up and to the right: a masked stack's blind spot
            assert depends[:, r, c, :, r - 1, c + 1].all(), (r, c)


def test_offsets_start_at_zero() -> None:
    """The output layer starts at zero, so training starts as the factorised decoder."""
    torch.manual_seed(0)
    context = GatedContext((3, 5, 4), layers=2)
    x = torch.rand(2, 3, 5, 4)
    base = torch.randn(6, 2, 3, 5, 4)
    assert torch.count_nonzero(context(x, base)) == 0
    decoded = context.generate(base[0].flatten(1), lambda logits: (logits > 0).float())
    assert torch.equal(decoded, (base[0] > 0).float().flatten(1))


@pytest.mark.parametrize("head_values", [1, autoregressive.HEAD_VALUES])
def test_the_stacks_run_once_per_image_whatever_the_number_of_samples(
    head_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring K samples of z runs the stacks once over the B images: only the head runs per
    sample (one sample per step, or all in one), and each sample's offsets are those of
    scoring it alone."""
    monkeypatch.setattr(autoregressive, "HEAD_VALUES", head_values)
    context = gated((1, 6, 5), layers=2)
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.5), generator=torch.Generator().manual_seed(0))
    base = torch.randn(7, 3, 1, 6, 5)
    calls = []
    context.layers[0].register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    offsets = context(x, base)
    assert calls == [3]
    for k in range(7):
        torch.testing.assert_close(offsets[k], context(x, base[k]))
    assert not torch.allclose(offsets[0], offsets[1])  # z reaches the offsets, through the head


@pytest.mark.parametrize(("shape", "layers"), [((1, 6, 5), 2), ((3, 5, 4), 3), ((1, 9, 7), 4)])
def test_generating_follows_the_scored_conditionals(shape, layers: int) -> None:
    """Filling pixels one at a time uses, at each pixel, the logits that scoring the finished
    image in one pass gives: with a deterministic choice (logit > 0) and with Bernoulli draws."""
    context = gated(shape, layers)
    base = torch.randn(16, *shape)
    with torch.no_grad():
        x = context.generate(base.flatten(1), lambda logits: (logits > 0).float()).view(base.shape)
        assert torch.equal(x, (base + context(x, base) > 0).float())

        seen, generator = [], torch.Generator().manual_seed(1)

        def draw(logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits)
            return torch.bernoulli(torch.sigmoid(logits), generator=generator)

        x = context.generate(base.flatten(1), draw).view(base.shape)
        used = torch.stack(seen, dim=-1).view(base.shape)  # (B, C, H*W) in raster order
        torch.testing.assert_close(used, base + context(x, base), rtol=1e-5, atol=1e-5)
        assert not torch.equal(x, (used > 0).float())  # the draws were random


def test_the_decoder_is_a_normalised_distribution() -> None:
    """Summed over all 2^9 binary 3 x 3 images, p(x|z) is 1."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_shape=(1, 3, 3), latent_dim=2, hidden_dims=(8,)))
    model.context = gated((1, 3, 3), layers=2)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9))).view(-1, 1, 3, 3)
    z = torch.randn(1, 2).expand(len(images), 2)
    with torch.no_grad():
        log_p = -model.likelihood.nll(model.decode_params(z, images), images)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_a_tiny_vae_with_the_gated_term_trains(batch: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY_VAE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss() -> float:
        with torch.no_grad():
            return model.loss(batch, generator=torch.Generator().manual_seed(0)).total.item()

    before = fixed_loss()
    for step in range(60):
        optimizer.zero_grad()
        model.loss(batch).total.backward()
        context = dict(model.context.named_parameters())
        if step == 0:  # the output layer is zero: nothing below it gets a gradient yet
            assert all(context[name].grad.abs().sum() > 0 for name in ("out.weight", "out.bias"))
            assert all(
                torch.count_nonzero(p.grad) == 0 for n, p in context.items() if "out." not in n
            )
        if step == 1:  # once it has moved, every parameter of the model does
            for name, parameter in model.named_parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
    assert fixed_loss() < before - 5.0

    model.eval()
    save_checkpoint(tmp_path / "last", model, RunConfig(model=TINY_VAE), {"epoch": 1})
    loaded, _, _ = load_checkpoint(tmp_path / "last")
    z = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.decode_params(z, batch[:5]), model.decode_params(z, batch[:5]), rtol=0, atol=0
        )
        samples = loaded.sample(4, generator=torch.Generator().manual_seed(2))
        again = model.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(samples, again) and samples.shape == (4, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 1
    result = evaluate(loaded, batch, k=10)
    assert math.isfinite(result.nll) and result.nll > 0


def test_the_depth_must_be_positive() -> None:
    with pytest.raises(vaelab.VaelabError, match="--ar-layers must be a positive whole number"):
        ModelConfig(autoregressive="gated", ar_layers=0)
