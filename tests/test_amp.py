"""`--amp`: bfloat16 networks with fp32 weights and loss terms, in training and in `eval`.

The CPU's bfloat16 support is set through $VAELAB_NATIVE_BF16 (the override vaelab reads), so
these tests take the bfloat16 path on any CPU (where it is emulated, only slower) and the
fallback path on this one."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from tests.test_training import assert_identical, weights, without_timing
from torch import nn

import vaelab
from vaelab import VaelabError, train
from vaelab.analysis.evaluate import evaluate
from vaelab.cli import main
from vaelab.models import ModelConfig, build_model
from vaelab.training.callbacks import Callbacks
from vaelab.training.metrics import read_metrics
from vaelab.training.precision import BF16, FP32, Precision, choose_precision, native_bf16

# (model, architecture, autoregressive term, likelihood, sigma): every model part autocast meets
VARIANTS = {
    "ae-mlp": ("ae", "mlp", "none", "bernoulli", None),
    "dae-conv": ("dae", "conv", "none", "gaussian", 0.1),
    "vae-mlp": ("vae", "mlp", "none", "bernoulli", None),
    "vae-conv-learned-sigma": ("vae", "conv", "none", "gaussian", None),
    "vae-mlp-linear": ("vae", "mlp", "linear", "bernoulli", None),
    "vae-conv-local": ("vae", "conv", "local", "bernoulli", None),
    "vqvae-ema": ("vqvae", "conv", "none", "bernoulli", None),
    "vqvae-loss": ("vqvae", "conv", "none", "gaussian", 0.1),
    "btcvae-mlp": ("btcvae", "mlp", "none", "bernoulli", None),
    "factorvae-mlp": ("factorvae", "mlp", "none", "bernoulli", None),
    "dipvae-conv": ("dipvae", "conv", "none", "bernoulli", None),
    "cvae-mlp-prior": ("cvae", "mlp", "none", "bernoulli", None),
    "cvae-conv-observed": ("cvae", "conv", "none", "gaussian", 0.1),
    "m2-mlp": ("m2", "mlp", "none", "bernoulli", None),
}
# the conditional variants' options: a learned p(z|y); completion from the left half
CONDITIONS = {
    "cvae-mlp-prior": {"conditional_prior": True},
    "cvae-conv-observed": {"observe": "left", "conditional_prior": True},
}
BF16_CPU = Precision(BF16, "cpu")


@pytest.fixture(autouse=True)
def native_cpu_bf16(monkeypatch):
    """Every test here sees a CPU with native bfloat16, unless it says otherwise."""
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "1")


def tiny(variant: str, **options) -> ModelConfig:
    kind, architecture, autoregressive, likelihood, sigma = VARIANTS[variant]
    values = dict(
        model=kind,
        architecture=architecture,
        autoregressive=autoregressive,
        likelihood=likelihood,
        sigma=sigma,
        data_shape=(1, 8, 8),
        latent_dim=4,
        hidden_dims=(32,),
        conv_channels=(8, 16),
        codebook_size=8,
        code_dim=4,
        codebook_update="loss" if variant == "vqvae-loss" else "ema",
        dataset_size=1000,  # a btcvae's and an m2's N
        discriminator_hidden=(16, 16),  # a factorvae's
        classes=3,  # a cvae's and an m2's
    )
    return ModelConfig(**(values | CONDITIONS.get(variant, {}) | options))


def labels(model: vaelab.Autoencoder, batch: torch.Tensor, *, hidden: bool = True):
    """The labels a label-conditional model's loss takes (an m2's: every other one hidden,
    so that both of its bounds run); None for the others."""
    if not model.needs_labels:
        return None
    y = torch.arange(len(batch)) % model.config.classes
    if hidden and model.config.model == "m2":
        y[::2] = -1
    return y


def build(variant: str) -> vaelab.Autoencoder:
    torch.manual_seed(0)
    return build_model(tiny(variant))


def network_output_dtypes(model: nn.Module) -> set[torch.dtype]:
    """Records the dtypes that the model's linear and convolution layers output."""
    seen: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


every_variant = pytest.mark.parametrize("variant", VARIANTS)


# --- the model parts under autocast ------------------------------------------------------------


@every_variant
def test_autocast_runs_the_networks_in_bf16_and_keeps_the_loss_terms_in_fp32(variant, batch):
    model = build(variant)
    seen = network_output_dtypes(model)
    generator = torch.Generator().manual_seed(1)
    y, known = labels(model, batch), labels(model, batch, hidden=False)
    with BF16_CPU.autocast():
        terms = model.loss(batch, y=y, generator=generator)
        posterior = model.encode(batch, known)
        if model.has_prior:
            log_w = model.log_weights(batch, 3, y=known, generator=generator)
    assert torch.bfloat16 in seen  # the networks did run in bfloat16
    assert {terms.total.dtype, terms.recon.dtype, terms.kl.dtype} == {torch.float32}
    assert posterior.mean.dtype == torch.float32  # codes, samples and densities: fp32
    if model.has_prior:
        assert log_w.dtype == torch.float32 and log_w.shape == (3, len(batch))
        assert bool(log_w.isfinite().all())


@every_variant
def test_a_bf16_step_changes_every_parameter_and_keeps_them_fp32(variant, batch):
    model = build(variant)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # The local context's output layer starts at zero, so its first layer moves from step 2.
    for step in range(2 if variant.endswith("local") else 1):
        optimizer.zero_grad()
        with BF16_CPU.autocast():
            terms = model.loss(
                batch, y=labels(model, batch), generator=torch.Generator().manual_seed(step)
            )
        terms.objective.backward()
        assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
        optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@every_variant
def test_the_bf16_loss_is_the_fp32_loss_to_bfloat16_rounding(variant, batch):
    """The same weights and noise give the same loss up to bfloat16's 3 significant digits
    in the networks: a check that autocast computes the same objective, not another."""
    model = build(variant).eval()
    y = labels(model, batch)
    with torch.no_grad():
        exact = model.loss(batch, y=y, generator=torch.Generator().manual_seed(2))
        with BF16_CPU.autocast():
            reduced = model.loss(batch, y=y, generator=torch.Generator().manual_seed(2))
    assert reduced.total.item() == pytest.approx(exact.total.item(), rel=0.02)
    assert reduced.total.item() != exact.total.item()  # and it did compute in bfloat16


def test_the_nearest_entry_search_is_fp32_under_autocast():
    """Entries close together far from 0 (a common offset, a small spread): bfloat16 distances
    would confuse them; the codes of each entry must map back to it."""
    model = build("vqvae-ema")
    generator = torch.Generator().manual_seed(0)
    entries = 40.0 + 0.05 * torch.randn(model.quantizer.codebook.shape, generator=generator)
    model.quantizer.codebook.copy_(entries)
    indices = torch.randint(0, len(entries), (64, *model.grid), generator=generator)
    with torch.no_grad(), BF16_CPU.autocast():
        found = model.indices_of(model.codes_of(indices))
    assert torch.equal(found, indices)


# --- choosing the precision ----------------------------------------------------------------------


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(False, False), (True, False), (False, True)])
def test_native_support_is_detected_from_the_cpu(monkeypatch, caplog, avx512_bf16, amx):
    monkeypatch.delenv("VAELAB_NATIVE_BF16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    expected = avx512_bf16 or amx
    assert native_bf16(torch.device("cpu")) == expected
    with caplog.at_level(logging.WARNING):
        chosen = choose_precision(True, torch.device("cpu"))
    assert chosen.name == (BF16 if expected else FP32)
    assert len(caplog.records) == (0 if expected else 1)
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "1")  # the override wins over the detection
    assert native_bf16(torch.device("cpu"))
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "0")
    assert not native_bf16(torch.device("cpu"))


def test_without_native_bf16_amp_says_so_once_and_uses_fp32(monkeypatch, caplog):
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "0")
    with caplog.at_level(logging.WARNING):
        chosen = choose_precision(True, torch.device("cpu"))
    assert chosen == Precision(FP32, "cpu")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("--amp: no native bfloat16 on this CPU (no AVX512-BF16 or AMX")
    assert line.endswith("running in fp32") and "\n" not in line
    caplog.clear()
    assert choose_precision(False, torch.device("cpu")) == Precision(FP32, "cpu")
    assert caplog.records == []


# --- training ----------------------------------------------------------------------------------


def test_an_amp_run_trains_in_bf16_and_records_it(tmp_path, tiny_run):
    amp = train(tiny_run(epochs=3, train={"amp": True}), tmp_path / "amp", progress=False)
    exact = train(tiny_run(epochs=3), tmp_path / "fp32", progress=False)
    records = read_metrics(tmp_path / "amp")
    assert [r["precision"] for r in records] == [BF16] * 3
    assert {r["precision"] for r in read_metrics(tmp_path / "fp32")} == {FP32}
    meta = json.loads((tmp_path / "amp" / "last" / "meta.json").read_text())
    assert meta["precision"] == BF16
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    # bfloat16 networks: not the fp32 run's weights, but a run of the same quality
    a, b = weights(tmp_path / "amp"), weights(tmp_path / "fp32")
    assert all(not torch.equal(a[k], b[k]) for k in a if "encoder" in k or "decoder" in k)
    assert {v.dtype for v in a.values()} == {torch.float32}
    assert amp.metrics["val/loss"] == pytest.approx(exact.metrics["val/loss"], rel=0.05)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"model": {"architecture": "conv"}, "data": {"binarize": True}},
        {"model": {"model": "vqvae", "codebook_size": 16, "code_dim": 4}},
    ],
    ids=["vae-mlp", "vae-conv-binarized", "vqvae"],
)
def test_a_resumed_amp_run_equals_an_uninterrupted_one(tmp_path, tiny_run, options):
    """A crash at step 15 (epoch 2 of 3; last/ saved at step 12), then resume: the weights,
    best/ and metrics are those of the uninterrupted run, bit for bit."""
    config = tiny_run(epochs=3, train={"amp": True, "checkpoint_every": 4}, **options)
    train(config, tmp_path / "straight", progress=False)

    class Crash(Callbacks):
        def on_batch(self, x, *, step):
            if step == 15:
                raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        train(config, tmp_path / "resumed", progress=False, callbacks=Crash())
    meta = json.loads((tmp_path / "resumed" / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["step"], meta["batch"]) == (1, 12, 2)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert_identical(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    assert_identical(weights(tmp_path / "straight", "best"), weights(tmp_path / "resumed", "best"))
    assert without_timing(read_metrics(tmp_path / "resumed")) == without_timing(
        read_metrics(tmp_path / "straight")
    )


def test_without_native_bf16_an_amp_run_is_the_fp32_run(tmp_path, tiny_run, monkeypatch, capsys):
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "0")
    code = main(
        ["train", "--dataset", "digits", "--epochs", "2", "--hidden-dims", "32", "--latent-dim",
         "2", "--amp", "--no-figures", "--no-progress", "--out", str(tmp_path / "amp")]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "bfloat16" in line]
    assert len(warnings) == 1 and "running in fp32" in warnings[0]
    assert "Traceback" not in err
    main(
        ["train", "--dataset", "digits", "--epochs", "2", "--hidden-dims", "32", "--latent-dim",
         "2", "--no-figures", "--no-progress", "--out", str(tmp_path / "fp32")]
    )  # fmt: skip
    assert_identical(weights(tmp_path / "amp"), weights(tmp_path / "fp32"))
    assert {r["precision"] for r in read_metrics(tmp_path / "amp")} == {FP32}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "amp")]) == 0
    assert "# precision   fp32" in capsys.readouterr().out


def test_info_shows_the_precision_of_an_amp_run(tmp_path, tiny_run, capsys):
    train(tiny_run(epochs=1, train={"amp": True}), tmp_path / "run", progress=False)
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "# precision   bf16 (--amp: bfloat16 networks; fp32 weights and loss)" in out
    assert main(["info", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == BF16


# --- evaluation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory, digits_x):
    run = tmp_path_factory.mktemp("amp-eval") / "vae"
    config = vaelab.RunConfig.from_dict(
        {
            "model": {"latent_dim": 4, "hidden_dims": [64]},
            "data": {"dataset": "digits", "binarize": True},
            "train": {"epochs": 15, "batch_size": 64, "device": "cpu"},
        }
    )
    train(config, run, progress=False)
    return run


def test_eval_with_amp_agrees_with_fp32_on_the_same_samples(trained_vae, digits_x):
    model = vaelab.load(trained_vae)
    exact = evaluate(model, digits_x, k=50, binarize=True)
    reduced = evaluate(model, digits_x, k=50, binarize=True, amp=True)
    assert (exact.precision, reduced.precision) == (FP32, BF16)
    assert reduced.nll != exact.nll  # the networks did run in bfloat16...
    assert abs(reduced.nll - exact.nll) < 0.05  # ...and the NLL is the same to 0.05 nats
    assert abs(reduced.kl - exact.kl) < 0.05
    assert next(model.parameters()).dtype == torch.float32 and not model.training


def test_vaelab_eval_amp_keeps_its_own_record(trained_vae, capsys):
    for extra in ([], ["--amp"]):
        code = main(["eval", str(trained_vae), "--k", "20", "--no-progress", *extra])
        assert code == 0
    out = capsys.readouterr().out
    assert "bfloat16 networks" in out
    records = json.loads((trained_vae / "eval.json").read_text())
    assert set(records) == {"best/test/k=20", "best/test/k=20/bf16"}
    assert records["best/test/k=20/bf16"]["precision"] == BF16
    assert records["best/test/k=20"]["precision"] == FP32


def test_eval_amp_without_native_bf16_is_fp32_and_says_so(trained_vae, monkeypatch, capsys):
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "0")
    code = main(["eval", str(trained_vae), "--k", "20", "--amp", "--no-progress", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == FP32
    assert "running in fp32" in captured.err


def test_an_amp_run_refuses_nothing_it_did_before(tmp_path, tiny_run, capsys):
    """--amp is a training-loop option: a run may be resumed with or without it."""
    train(tiny_run(epochs=1), tmp_path / "run", progress=False)
    result = train(tiny_run(epochs=2, train={"amp": True}), tmp_path / "run", resume=True,
                   progress=False)  # fmt: skip
    assert result.epochs == 2
    assert [r["precision"] for r in read_metrics(tmp_path / "run")] == [FP32, BF16]
    assert main(["info", str(tmp_path / "run"), "--checkpoint", "last"]) == 0
    assert "# precision   bf16 (--amp: bfloat16 networks; fp32 weights and loss); by epoch: " \
        "1 fp32, 2 bf16" in capsys.readouterr().out  # fmt: skip
    with pytest.raises(VaelabError, match="cannot resume with different \\[model\\]"):
        train(tiny_run(epochs=3, model={"latent_dim": 3}), tmp_path / "run", resume=True,
              progress=False)  # fmt: skip


def test_eval_amp_agrees_with_fp32_for_an_autoencoder_and_a_vqvae_with_its_prior(
    tmp_path, tiny_run, digits_x
):
    from vaelab.models.pixelcnn import PixelCNNConfig
    from vaelab.training.code_prior import PriorTraining
    from vaelab.training.prior_trainer import train_prior

    train(tiny_run(epochs=3, model={"model": "ae"}), tmp_path / "ae", progress=False)
    vq = {"model": "vqvae", "codebook_size": 16, "code_dim": 4}
    train(tiny_run(epochs=3, model=vq), tmp_path / "vq", progress=False)
    network = PixelCNNConfig(codebook_size=1, grid=(1, 1), channels=8, layers=2)
    train_prior(tmp_path / "vq", network, PriorTraining(epochs=2), progress=False)
    for name in ("ae", "vq"):
        model = vaelab.load(tmp_path / name)
        exact = evaluate(model, digits_x, k=10)
        reduced = evaluate(model, digits_x, k=10, amp=True)
        assert reduced.precision == BF16 and reduced.recon != exact.recon
        assert reduced.recon == pytest.approx(exact.recon, rel=0.01)
        if name == "vq":  # the bound under the fitted PixelCNN: the same codes, scored alike
            assert abs(reduced.kl - exact.kl) < 0.05
            assert abs(reduced.nll - exact.nll) < 0.1


def test_the_model_card_shows_the_fp32_evaluation_not_eval_amps():
    from vaelab.cli.pack import _shown_record

    records = {
        "best/test/k=100": {"split": "test", "k": 100, "precision": FP32, "nll": 90.0},
        "best/test/k=1000/bf16": {"split": "test", "k": 1000, "precision": BF16, "nll": 89.0},
        "best/test/k=10": {"split": "test", "k": 10, "nll": 91.0},  # before precision was kept
    }
    assert _shown_record(records, "test")["nll"] == 90.0


class FakeGroup:
    """Two ranks, seen from one of them: `others_native` is the other rank's bfloat16."""

    def __init__(self, *, is_main: bool, others_native: bool) -> None:
        self.is_main, self.others_native, self.device = is_main, others_native, torch.device("cpu")

    def any(self, flag: bool) -> bool:
        return flag or not self.others_native


@pytest.mark.parametrize("is_main", [True, False])
@pytest.mark.parametrize("mine", [True, False])
@pytest.mark.parametrize("others", [True, False])
def test_the_ranks_agree_on_bf16_only_where_all_have_it(monkeypatch, caplog, is_main, mine, others):
    from vaelab.training.trainer import _agreed_precision

    monkeypatch.setenv("VAELAB_NATIVE_BF16", "1" if mine else "0")
    with caplog.at_level(logging.WARNING):
        chosen = _agreed_precision(True, FakeGroup(is_main=is_main, others_native=others))
    assert chosen.name == (BF16 if mine and others else FP32)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == (1 if is_main and not (mine and others) else 0)
    with caplog.at_level(logging.WARNING):
        assert (
            _agreed_precision(False, FakeGroup(is_main=is_main, others_native=False)).name == FP32
        )
