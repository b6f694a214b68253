"""The training loop end to end on the built-in `digits` data: the run folder, determinism,
resuming bit for bit, early stopping, KL warm-up, clipping, schedules, divergence, configs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from vaelab import VAE, RunConfig, VaelabError, train
from vaelab.data import DataSplits, Split
from vaelab.models import LossTerms
from vaelab.training import TrainingDiverged, read_config_file
from vaelab.training.callbacks import Callbacks
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.config import OptimConfig, TrainConfig
from vaelab.training.metrics import read_metrics
from vaelab.training.schedules import kl_scale, learning_rate

TIMING = ("epoch_seconds", "samples_per_second")


def weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir, prefer=which)[0].state_dict()


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def meta(run_dir: Path, which: str) -> dict:
    return json.loads((run_dir / which / "meta.json").read_text())


def spy_on_vae_loss(monkeypatch, on_call=None) -> list[dict]:
    """Record every training-mode call of VAE.loss; `on_call(n, terms)` may change the terms."""
    original = VAE.loss
    calls: list[dict] = []

    def loss(self, x, *, kl_scale=1.0, generator=None, **options):
        terms = original(self, x, kl_scale=kl_scale, generator=generator, **options)
        if self.training:
            values = {name: getattr(terms, name).detach().item() for name in ("recon", "kl")}
            calls.append({"kl_scale": kl_scale, "n": len(x), **values})
            if on_call is not None:
                terms = on_call(len(calls), terms)
        return terms

    monkeypatch.setattr(VAE, "loss", loss)
    return calls


def fake_validation_loss(monkeypatch, total: float, recon: float, kl: float) -> None:
    """VAE.loss in eval mode (validation) returns these batch means; training is untouched."""
    original = VAE.loss

    def loss(self, x, **options):
        if self.training:
            return original(self, x, **options)
        return LossTerms(*(torch.tensor(v, device=x.device) for v in (total, recon, kl)))

    monkeypatch.setattr(VAE, "loss", loss)


class Recorder(Callbacks):
    """Everything the loop reports through its callbacks."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []  # (step, examples)
        self.checkpoints: list[tuple[str, Path]] = []
        self.records: list[dict] = []
        self.threads: list[int] = []  # torch's CPU threads at each epoch's end

    def on_batch(self, x, *, step):
        self.batches.append((step, len(x)))

    def on_checkpoint(self, which, path):
        self.checkpoints.append((which, path))

    def on_epoch_end(self, record):
        self.records.append(record)
        self.threads.append(torch.get_num_threads())


@pytest.fixture
def steps_per_epoch(digits_x) -> int:
    return math.ceil(len(digits_x) / 128)  # the tiny_run batch size


# --- the run folder --------------------------------------------------------------------------


def test_train_writes_config_metrics_and_checkpoints(tmp_path, tiny_run, steps_per_epoch):
    config = tiny_run(epochs=3)
    result = train(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.run_dir == run
    assert result.epochs == 3
    assert not result.stopped_early

    saved = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert saved.model.data_shape == (1, 8, 8)  # taken from the data
    assert saved.train == config.train and saved.optim == config.optim

    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [steps_per_epoch * e for e in (1, 2, 3)]
    for record in records:
        for split in ("train", "val"):
            for term in ("loss", "recon", "kl"):
                assert math.isfinite(record[f"{split}/{term}"])
        assert record["train/loss"] == pytest.approx(record["train/recon"] + record["train/kl"])
        assert record["val/loss"] == pytest.approx(record["val/recon"] + record["val/kl"])
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert result.metrics == records[-1]
    assert result.best_loss == min(r["val/loss"] for r in records)

    checkpoint_files = {"config.json", "model.safetensors", "meta.json"}
    state_files = {"training_state.json", "training_state.safetensors"}
    assert {p.name for p in (run / "last").iterdir()} == checkpoint_files | state_files
    assert {p.name for p in (run / "best").iterdir()} == checkpoint_files
    assert meta(run, "last")["epoch"] == 3
    best_epoch = min(records, key=lambda r: r["val/loss"])["epoch"]
    assert meta(run, "best")["epoch"] == best_epoch
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp folders

    model = vaelab.load(run, checkpoint="last")
    assert model.config == saved.model
    assert model.sample(2).shape == (2, 1, 8, 8)


def test_a_run_folder_is_not_overwritten_without_force(tmp_path, tiny_run):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    with pytest.raises(VaelabError, match="already holds another run"):
        train(tiny_run(epochs=1), tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    train(tiny_run(epochs=2), tmp_path, force=True, progress=False)
    assert len(read_metrics(tmp_path)) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_needs_a_run_and_the_same_model(tmp_path, tiny_run):
    with pytest.raises(VaelabError, match="nothing to resume"):
        train(tiny_run(epochs=2), tmp_path, resume=True, progress=False)
    train(tiny_run(epochs=1), tmp_path, progress=False)
    with pytest.raises(VaelabError, match=r"\[model\]"):
        train(tiny_run(epochs=2, model={"latent_dim": 3}), tmp_path, resume=True, progress=False)
    with pytest.raises(VaelabError, match=r"\[optim\]"):
        train(tiny_run(epochs=2, optim={"lr": 1e-2}), tmp_path, resume=True, progress=False)


# --- determinism and resuming ----------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, tiny_run):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(tiny_run(epochs=2, train={"seed": seed}), tmp_path / name, progress=False)
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert without_timing(read_metrics(tmp_path / "a")) == without_timing(
        read_metrics(tmp_path / "b")
    )
    a, c = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert all(not torch.equal(a[k], c[k]) for k in a)


RESUME_VARIANTS = {
    "vae": {},
    "binarize": {"data": {"binarize": True}},
    "dae-gaussian": {"model": {"model": "dae", "noise": "gaussian"}},
    "dae-mask": {"model": {"model": "dae", "noise": "mask"}},
    "ae-conv": {"model": {"model": "ae", "architecture": "conv"}},
    "learned-sigma": {"model": {"likelihood": "gaussian"}},
    # the codebook's averages, usage and restarts (drawn from the noise generator) resume too
    "vqvae-ema": {"model": {"model": "vqvae", "codebook_size": 16, "code_dim": 4}},
    "vqvae-loss": {
        "model": {"model": "vqvae", "codebook_size": 16, "code_dim": 4, "codebook_update": "loss"}
    },
    # the disentangling VAEs; FactorVAE's discriminator has its own optimiser group, and its
    # permutations come from the noise generator
    "factorvae": {"model": {"model": "factorvae", "discriminator_hidden": [16, 16]}},
    "btcvae": {"model": {"model": "btcvae", "beta": 6.0}},
    "dipvae-ii": {"model": {"model": "dipvae", "dip_type": "ii"}},
    "vae-capacity": {"model": {"capacity": 5.0}, "train": {"kl_warmup_epochs": 2.0}},
    "warmup-clip-adamw": {
        "train": {"kl_warmup_epochs": 2.0},
        "optim": {"grad_clip": 5.0, "optimizer": "adamw", "weight_decay": 0.01},
    },
}


@pytest.mark.parametrize("variant", RESUME_VARIANTS)
def test_resume_continues_bit_for_bit(tmp_path, tiny_run, variant):
    options = RESUME_VARIANTS[variant]
    train(tiny_run(epochs=3, **options), tmp_path / "straight", progress=False)
    train(tiny_run(epochs=1, **options), tmp_path / "resumed", progress=False)
    result = train(tiny_run(epochs=3, **options), tmp_path / "resumed", resume=True, progress=False)
    assert result.epochs == 3
    assert_identical(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    assert_identical(weights(tmp_path / "straight", "best"), weights(tmp_path / "resumed", "best"))
    straight = without_timing(read_metrics(tmp_path / "straight"))
    resumed = without_timing(read_metrics(tmp_path / "resumed"))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert resumed == straight


def test_interrupted_run_with_schedules_resumes_bit_for_bit(
    tmp_path, tiny_run, monkeypatch, steps_per_epoch
):
    """A crash mid-epoch 3 of 4 (cosine decay, warm-ups): resuming equals the straight run."""
    config = tiny_run(
        epochs=4,
        optim={"schedule": "cosine", "warmup_steps": 5, "min_lr_ratio": 0.1},
        train={"kl_warmup_epochs": 1.5},
    )
    train(config, tmp_path / "straight", progress=False)

    def interrupt(n, terms):
        if n == 2 * steps_per_epoch + 3:
            raise KeyboardInterrupt
        return terms

    spy_on_vae_loss(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    assert meta(tmp_path / "resumed", "last")["epoch"] == 2
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert_identical(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    assert without_timing(read_metrics(tmp_path / "resumed")) == without_timing(
        read_metrics(tmp_path / "straight")
    )


def test_resuming_a_finished_run_changes_nothing(tmp_path, tiny_run):
    first = train(tiny_run(epochs=2), tmp_path, progress=False)
    before = weights(tmp_path)
    again = train(tiny_run(epochs=2), tmp_path, resume=True, progress=False)
    assert again.epochs == 2
    assert again.metrics == first.metrics
    assert again.best_loss == first.best_loss
    assert_identical(weights(tmp_path), before)
    assert len(read_metrics(tmp_path)) == 2


# --- loop features ---------------------------------------------------------------------------


def test_early_stopping_stops_and_says_so(tmp_path, tiny_run, monkeypatch, caplog):
    # A validation loss that never improves after epoch 1: patience 2 stops after epoch 3.
    fake_validation_loss(monkeypatch, total=5.0, recon=5.0, kl=0.0)
    with caplog.at_level(logging.INFO, logger="vaelab.training.trainer"):
        result = train(tiny_run(epochs=10, train={"early_stopping": 2}), tmp_path, progress=False)
    assert result.stopped_early
    assert result.epochs == 3
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert meta(tmp_path, "best")["epoch"] == 1
    assert meta(tmp_path, "last")["epoch"] == 3
    assert "early stopping" in caplog.text


def test_early_stopping_does_not_stop_an_improving_run(tmp_path, tiny_run):
    result = train(tiny_run(epochs=3, train={"early_stopping": 2}), tmp_path, progress=False)
    assert not result.stopped_early
    assert result.epochs == 3


def test_kl_warmup_scales_the_kl_in_the_logged_loss(
    tmp_path, tiny_run, monkeypatch, steps_per_epoch
):
    calls = spy_on_vae_loss(monkeypatch)
    config = tiny_run(epochs=2, model={"beta": 2.0}, train={"kl_warmup_epochs": 4.0})
    train(config, tmp_path, progress=False)
    warmup_steps = 4.0 * steps_per_epoch
    assert [c["kl_scale"] for c in calls] == [
        min(1.0, (step + 1) / warmup_steps) for step in range(2 * steps_per_epoch)
    ]
    for epoch, record in enumerate(read_metrics(tmp_path)):
        epoch_calls = calls[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        n = sum(c["n"] for c in epoch_calls)

        def mean(term, epoch_calls=epoch_calls, n=n):
            return sum(c[term] * c["n"] for c in epoch_calls) / n

        weighted_kl = sum(2.0 * c["kl_scale"] * c["kl"] * c["n"] for c in epoch_calls)
        # loss = recon + beta * kl_scale * kl, step by step, averaged over the epoch
        assert record["train/loss"] == pytest.approx(mean("recon") + weighted_kl / n, rel=1e-5)
        assert record["train/recon"] == pytest.approx(mean("recon"), rel=1e-5)
        assert record["train/kl"] == pytest.approx(mean("kl"), rel=1e-5)
        assert record["train/loss"] < record["train/recon"] + 2.0 * record["train/kl"]
        assert record["val/loss"] == pytest.approx(record["val/recon"] + 2.0 * record["val/kl"])


def test_gradient_clipping_bounds_every_update(tmp_path, tiny_run, monkeypatch, steps_per_epoch):
    original = torch.nn.utils.clip_grad_norm_
    norms: list[tuple[float, float]] = []

    def clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = float(original(parameters, max_norm, *args, **kwargs))
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters]))
        norms.append((before, float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    result = train(tiny_run(epochs=2, optim={"grad_clip": 0.5}), tmp_path, progress=False)
    assert len(norms) == 2 * steps_per_epoch
    assert any(before > 0.5 for before, _ in norms)  # clipping actually engaged
    assert all(after <= 0.5 * (1 + 1e-4) for _, after in norms)
    assert math.isfinite(result.metrics["train/loss"])
    assert result.metrics["train/loss"] < read_metrics(tmp_path)[0]["train/loss"]


def test_no_clipping_without_grad_clip(tmp_path, tiny_run, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("clip_grad_norm_ called without grad_clip")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", fail)
    train(tiny_run(epochs=1), tmp_path, progress=False)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_logged_learning_rate_follows_the_schedule(tmp_path, tiny_run, schedule, steps_per_epoch):
    config = tiny_run(epochs=3, optim={"schedule": schedule, "warmup_steps": 4})
    total = 3 * steps_per_epoch
    for record in read_metrics(train(config, tmp_path, progress=False).run_dir):
        last_step = record["epoch"] * steps_per_epoch - 1
        assert record["lr"] == learning_rate(last_step, total, config.optim)


# --- schedules -------------------------------------------------------------------------------


def test_learning_rate_warmup_is_linear_then_reaches_lr():
    optim = OptimConfig(lr=0.1, warmup_steps=4)
    got = [learning_rate(step, 100, optim) for step in range(6)]
    assert got == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decaying_learning_rate_start_middle_end(schedule):
    optim = OptimConfig(lr=0.1, schedule=schedule, warmup_steps=10, min_lr_ratio=0.2)
    total = 110  # 10 warm-up steps, then 100 of decay
    assert learning_rate(10, total, optim) == pytest.approx(0.1)
    assert learning_rate(60, total, optim) == pytest.approx(0.1 * (0.2 + 0.8 * 0.5))
    assert learning_rate(total, total, optim) == pytest.approx(0.02)
    assert learning_rate(total + 50, total, optim) == pytest.approx(0.02)  # stays at the floor
    quarter = 0.5 * (1 + math.cos(math.pi / 4)) if schedule == "cosine" else 0.75
    assert learning_rate(35, total, optim) == pytest.approx(0.1 * (0.2 + 0.8 * quarter))
    decay = [learning_rate(step, total, optim) for step in range(10, total + 1)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_constant_learning_rate():
    optim = OptimConfig(lr=0.01)
    assert {learning_rate(step, 50, optim) for step in (0, 25, 49, 50, 99)} == {0.01}


def test_kl_scale_ramps_linearly_to_one():
    assert kl_scale(0, 10, 0.0) == 1.0
    assert kl_scale(0, 10, 2.0) == pytest.approx(1 / 20)
    assert kl_scale(9, 10, 2.0) == pytest.approx(0.5)
    assert kl_scale(19, 10, 2.0) == 1.0
    assert kl_scale(500, 10, 2.0) == 1.0
    assert kl_scale(4, 10, 0.5) == 1.0


# --- divergence ------------------------------------------------------------------------------


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_run, monkeypatch
):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    good = weights(tmp_path)
    files = {p: p.read_bytes() for p in (tmp_path / "last").iterdir()}

    def poison(n, terms):  # from the first step of epoch 2 on, the loss is NaN
        return type(terms)(total=terms.total * math.nan, recon=terms.recon, kl=terms.kl)

    spy_on_vae_loss(monkeypatch, poison)
    with pytest.raises(TrainingDiverged, match="epoch 2") as error:
        train(tiny_run(epochs=3), tmp_path, resume=True, progress=False)
    assert isinstance(error.value, VaelabError)
    assert "\n" not in str(error.value)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (tmp_path / "last").iterdir()} == files
    assert meta(tmp_path, "last")["epoch"] == 1
    loaded = weights(tmp_path)
    assert_identical(loaded, good)
    assert all(torch.isfinite(t).all() for t in loaded.values())
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]


def test_nan_update_on_the_last_step_of_an_epoch_is_not_saved(
    tmp_path, tiny_run, monkeypatch, steps_per_epoch
):
    """The loss of the step is finite, but its gradient is NaN: the weights become NaN."""
    train(tiny_run(epochs=1), tmp_path, progress=False)
    good = weights(tmp_path)

    def poison_gradient(n, terms):
        if n == steps_per_epoch:  # the last step of epoch 2
            terms.total.register_hook(lambda grad: grad * math.nan)
        return terms

    spy_on_vae_loss(monkeypatch, poison_gradient)
    with pytest.raises(TrainingDiverged):
        train(tiny_run(epochs=3), tmp_path, resume=True, progress=False)
    monkeypatch.undo()
    assert meta(tmp_path, "last")["epoch"] == 1
    assert_identical(weights(tmp_path), good)


# --- data the model cannot score ------------------------------------------------------------


def toy_splits(train_x: torch.Tensor, val_x: torch.Tensor) -> DataSplits:
    empty = torch.zeros(0, *train_x.shape[1:])
    return DataSplits(
        name="toy",
        train=Split(x=train_x, y=None),
        val=Split(x=val_x, y=None),
        test=Split(x=empty, y=None),
        class_names=None,
    )


@pytest.mark.parametrize(
    ("split", "value", "match"),
    [
        ("train", 2.0, "training data of toy has values in"),
        ("train", math.nan, "training data of toy contains NaN"),
        ("val", -1.0, "validation data of toy has values in"),
        ("val", math.inf, "validation data of toy contains NaN or infinite"),
    ],
)
def test_data_the_likelihood_cannot_score_is_refused_before_training(
    tmp_path, tiny_run, monkeypatch, split, value, match
):
    x = {"train": torch.rand(40, 1, 8, 8), "val": torch.rand(10, 1, 8, 8)}
    x[split][3, 0, 2, 5] = value
    splits = toy_splits(x["train"], x["val"])
    with pytest.raises(VaelabError, match=match):
        train(tiny_run(epochs=1), tmp_path, progress=False, data=splits)
    assert not (tmp_path / "last").exists()


def test_force_with_bad_data_leaves_the_old_run_alone(tmp_path, tiny_run, monkeypatch):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    bad = torch.rand(40, 1, 8, 8)
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(VaelabError, match="NaN"):
        train(
            tiny_run(epochs=1), tmp_path, force=True, progress=False, data=toy_splits(bad, bad[:10])
        )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_gaussian_likelihood_trains_on_unbounded_data(tmp_path, tiny_run):
    splits = toy_splits(3 * torch.randn(40, 1, 8, 8), 3 * torch.randn(10, 1, 8, 8))
    config = tiny_run(epochs=2, model={"likelihood": "gaussian"})
    result = train(config, tmp_path, progress=False, data=splits)
    assert math.isfinite(result.best_loss)


# --- seams: in-memory data, callbacks, CPU threads ------------------------------------------


def test_callbacks_see_every_step_checkpoint_and_epoch(
    tmp_path, tiny_run, digits_x, steps_per_epoch
):
    recorder = Recorder()
    result = train(tiny_run(epochs=2), tmp_path, progress=False, callbacks=recorder)
    assert [step for step, _ in recorder.batches] == list(range(2 * steps_per_epoch))
    for epoch in range(2):
        epoch_batches = recorder.batches[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        assert sum(n for _, n in epoch_batches) == len(digits_x)
    assert recorder.records == read_metrics(tmp_path)
    assert recorder.records[-1] == result.metrics
    assert [which for which, _ in recorder.checkpoints].count("last") == 2
    assert recorder.checkpoints[-1] == ("last", tmp_path / "last")
    assert {path for _, path in recorder.checkpoints} <= {tmp_path / "best", tmp_path / "last"}


def test_data_in_memory_trains_and_resumes(tmp_path, tiny_run):
    splits = toy_splits(torch.rand(40, 1, 8, 8), torch.rand(10, 1, 8, 8))
    recorder = Recorder()
    train(tiny_run(epochs=1), tmp_path, progress=False, data=splits, callbacks=recorder)
    assert recorder.batches == [(0, 40)]  # one batch of the 40 given images, not digits
    result = train(tiny_run(epochs=2), tmp_path, resume=True, progress=False, data=splits)
    assert result.epochs == 2
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]


def test_threads_hold_during_training_and_are_put_back(tmp_path, tiny_run):
    before = torch.get_num_threads()
    threads = before + 1
    recorder = Recorder()
    train(
        tiny_run(epochs=2, train={"threads": threads}),
        tmp_path / "a",
        progress=False,
        callbacks=recorder,
    )
    assert recorder.threads == [threads, threads]
    assert torch.get_num_threads() == before

    class Crash(Callbacks):
        def on_epoch_end(self, record):
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            tiny_run(epochs=2, train={"threads": threads}),
            tmp_path / "b",
            progress=False,
            callbacks=Crash(),
        )
    assert torch.get_num_threads() == before


def test_without_threads_torchs_setting_is_left_alone(tmp_path, tiny_run):
    before = torch.get_num_threads()
    recorder = Recorder()
    train(tiny_run(epochs=1), tmp_path, progress=False, callbacks=recorder)
    assert recorder.threads == [before]
    assert torch.get_num_threads() == before


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"modle": {}},
        {"model": {"latent": 2}},
        {"train": {"epochs": 3, "learning_rate": 0.1}},
        {"model": "vae"},
        {"model": {"latent_dim": 0}},
        {"model": {"latent_dim": -1}},
        {"model": {"latent_dim": None}},
        {"model": {"model": "gan"}},
        {"model": {"architecture": "resnet"}},
        {"model": {"likelihood": "laplace"}},
        {"model": {"beta": -0.5}},
        {"model": {"sigma": 0}},
        {"model": {"sigma": -1.0}},
        {"model": {"hidden_dims": 5}},
        {"train": {"batch_size": 0}},
        {"train": {"epochs": 0}},
        {"train": {"epochs": "ten"}},
        {"train": {"device": "tpu"}},
        {"train": {"early_stopping": 0}},
        {"train": {"kl_warmup_epochs": -1}},
        {"optim": {"lr": 0}},
        {"optim": {"optimizer": "sgd"}},
        {"optim": {"schedule": "step"}},
        {"optim": {"grad_clip": 0}},
        {"optim": {"min_lr_ratio": 1.5}},
        {"optim": {"warmup_steps": -1}},
        {"data": {"val_fraction": 1.5}},
    ],
    ids=lambda v: json.dumps(v),
)
def test_bad_run_config_raises_one_line_vaelab_error(values):
    with pytest.raises(VaelabError) as error:
        RunConfig.from_dict(values)
    assert "\n" not in str(error.value)


def test_bad_config_dataclasses_raise_vaelab_error():
    with pytest.raises(VaelabError, match="batch size"):
        TrainConfig(batch_size=0)
    with pytest.raises(VaelabError, match="learning rate"):
        OptimConfig(lr=-1.0)
    with pytest.raises(VaelabError):
        RunConfig.from_dict([["model", {}]])


def test_run_config_dict_round_trip():
    config = RunConfig.from_dict({"model": {"latent_dim": 8, "hidden_dims": [32, 16]}})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    changed = config.updated({"train": {"epochs": 7}})
    assert changed.train.epochs == 7 and changed.model == config.model
    with pytest.raises(VaelabError):
        config.updated({"model": {"latent_dim": 0}})


def test_read_config_file_toml_json_and_run_folder(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nlatent_dim = 8\narchitecture = "conv"\n\n[train]\nepochs = 4\n')
    config = RunConfig.from_dict(read_config_file(toml))
    assert config.model.latent_dim == 8 and config.train.epochs == 4
    config.save(tmp_path / "config.json")
    assert RunConfig.from_dict(read_config_file(tmp_path / "config.json")) == config
    assert RunConfig.from_dict(read_config_file(tmp_path)) == config  # a run folder


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.toml", "[model\nlatent_dim = 8\n", "not valid TOML"),
        ("bad.toml", "[model]\nlatent_dim = \n", "not valid TOML"),
        ("bad.json", '{"model": ', "not valid JSON"),
        ("list.json", "[1, 2]", "table of sections"),
        ("binary.toml", b"\xff\xfe\x00garbage", "not valid TOML"),
    ],
)
def test_read_config_file_errors(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(VaelabError, match=match) as error:
        read_config_file(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_read_config_file_missing(tmp_path):
    with pytest.raises(VaelabError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")


def test_unknown_toml_option_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[model]\nlatnet_dim = 8\n")
    with pytest.raises(VaelabError, match="latnet_dim"):
        RunConfig.from_dict(read_config_file(path))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"train": {"epochs": 2.5}}, "epochs"),
        ({"model": {"latent_dim": "two"}}, "latent_dim"),
        ({"model": {"hidden_dims": [1.5]}}, "hidden_dims"),
        ({"train": {"binarize": 1}}, "binarize"),
        ({"data": {"image_size": [28, "a"]}}, "image_size"),
        ({"optim": {"lr": "fast"}}, "lr"),
    ],
)
def test_config_values_of_the_wrong_type_are_named(values, field) -> None:
    with pytest.raises(VaelabError, match=rf"option {field} in configuration section"):
        RunConfig.from_dict(values)


def test_config_accepts_json_and_toml_shapes() -> None:
    config = RunConfig.from_dict(
        {
            "data": {"image_size": 28},
            "optim": {"lr": 1, "grad_clip": None},
            "model": {"sigma": 0.1, "hidden_dims": [200, 200]},
        }
    )
    assert config.data.image_size == (28, 28)
    assert config.model.hidden_dims == (200, 200)


# --- run-folder robustness (acceptance findings) ---------------------------------------------


def test_saved_config_holds_absolute_data_paths(tmp_path, tiny_run, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "arr.npz", x=np.random.default_rng(0).random((30, 8, 8)).astype("float32"))
    monkeypatch.chdir(data)
    monkeypatch.setenv("VAELAB_DATA", ".")
    train(tiny_run(epochs=1, data={"dataset": "arr.npz"}), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["dataset"] == str(data / "arr.npz")
    assert saved["data_dir"] == str(data)  # $VAELAB_DATA, written down for later commands


def test_registered_names_are_not_taken_for_paths(tmp_path, tiny_run, monkeypatch):
    (tmp_path / "digits").mkdir()  # a folder that happens to share the dataset's name
    monkeypatch.chdir(tmp_path)
    train(tiny_run(epochs=1), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["dataset"] == "digits"


def test_checkpoints_record_the_data_range(tmp_path, tiny_run, digits_x):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    low, high = meta(tmp_path, "last")["data_range"]
    assert (low, high) == (float(digits_x.min()), float(digits_x.max()))


def test_binarize_refuses_data_outside_the_unit_interval(tmp_path, tiny_run):
    splits = toy_splits(3 * torch.rand(40, 1, 8, 8), torch.rand(10, 1, 8, 8))
    config = tiny_run(epochs=1, model={"likelihood": "gaussian"}, data={"binarize": True})
    with pytest.raises(VaelabError, match=r"--binarize .* needs data in \[0, 1\]"):
        train(config, tmp_path, progress=False, data=splits)


def test_unscaled_pixels_get_a_warning(tmp_path, tiny_run, caplog):
    splits = toy_splits(10 * torch.rand(40, 1, 8, 8), 10 * torch.rand(10, 1, 8, 8))
    config = tiny_run(epochs=1, model={"likelihood": "gaussian"})
    with caplog.at_level(logging.WARNING, logger="vaelab.training.trainer"):
        train(config, tmp_path, progress=False, data=splits)
    assert "divide by 255" in caplog.text


def test_an_overflowing_optimiser_state_stops_training(tmp_path, tiny_run, monkeypatch):
    # Gradients of ~1e25 are finite, but Adam's average of their squares overflows to inf,
    # which freezes the weights while the loss stays finite: that must not pass silently.
    def huge(n, terms):
        return type(terms)(total=terms.total * 1e25, recon=terms.recon, kl=terms.kl)

    spy_on_vae_loss(monkeypatch, on_call=huge)
    with pytest.raises(TrainingDiverged, match="optimiser state"):
        train(tiny_run(epochs=2), tmp_path, progress=False)
    assert not (tmp_path / "last").exists()


def test_best_is_saved_before_last(tmp_path, tiny_run):
    recorder = Recorder()
    train(tiny_run(epochs=1), tmp_path, progress=False, callbacks=recorder)
    assert recorder.checkpoints == [("best", tmp_path / "best"), ("last", tmp_path / "last")]


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(tmp_path, tiny_run):
    (tmp_path / "config.json").write_text("{}")  # what a kill in epoch 1 leaves
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(VaelabError, match="before its first checkpoint"):
        train(tiny_run(epochs=1), tmp_path, resume=True, progress=False)
    result = train(tiny_run(epochs=1), tmp_path, progress=False)  # no --force needed
    assert result.epochs == 1


def test_resume_clears_half_written_checkpoint_folders(tmp_path, tiny_run):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    stale = tmp_path / ".last.tmp-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    train(tiny_run(epochs=2), tmp_path, resume=True, progress=False)
    assert not stale.exists()


def test_unknown_options_get_a_suggestion() -> None:
    with pytest.raises(VaelabError, match=r"'arch' \(did you mean 'architecture'\?\)"):
        RunConfig.from_dict({"model": {"arch": "conv"}})


def test_seeds_beyond_64_bits_are_refused() -> None:
    with pytest.raises(VaelabError, match="seed must be between 0 and 2\\*\\*63 - 1"):
        RunConfig.from_dict({"train": {"seed": 2**64}})


# --- review findings: never touch what vaelab did not write; resume what can be resumed -------


def test_a_users_own_files_with_run_names_are_never_deleted(tmp_path, tiny_run):
    folder = tmp_path / "mine"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "notes.txt").write_text("mine")
    (folder / "config.json").write_text('{"not": "vaelab"}')
    (folder / "samples.png").write_bytes(b"my picture")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for force in (False, True):
        with pytest.raises(VaelabError, match="vaelab did not write"):
            train(tiny_run(epochs=1), folder, force=force, progress=False)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_force_writes_beside_unrelated_files(tmp_path, tiny_run):
    (tmp_path / "readme.txt").write_text("keep me")
    with pytest.raises(VaelabError, match="other files"):
        train(tiny_run(epochs=1), tmp_path, progress=False)
    train(tiny_run(epochs=1), tmp_path, force=True, progress=False)
    assert (tmp_path / "readme.txt").read_text() == "keep me"
    assert (tmp_path / "last" / "meta.json").is_file()


def test_resume_after_vaelab_data_changes(tmp_path, tiny_run, monkeypatch):
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    train(tiny_run(epochs=1), tmp_path, progress=False)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))  # where data lives may change
    assert train(tiny_run(epochs=2), tmp_path, resume=True, progress=False).epochs == 2


def test_a_mid_epoch_checkpoint_resumes_only_with_its_batch_size(tmp_path, tiny_run):
    config = tiny_run(epochs=2, train={"checkpoint_every": 3})
    with pytest.raises(VaelabError, match="loss became"):
        original = VAE.loss
        calls = {"n": 0}

        def fail_late(self, x, **kwargs):
            calls["n"] += 1 if self.training else 0
            terms = original(self, x, **kwargs)
            if calls["n"] == 5:
                return type(terms)(terms.total * math.nan, terms.recon, terms.kl)
            return terms

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(VAE, "loss", fail_late)
            train(config, tmp_path, progress=False)
    assert meta(tmp_path, "last")["batch"] == 3
    other = tiny_run(epochs=2, train={"checkpoint_every": 3, "batch_size": 64})
    with pytest.raises(VaelabError, match="same --batch-size"):
        train(other, tmp_path, resume=True, progress=False)
    assert train(config, tmp_path, resume=True, progress=False).epochs == 2


def test_a_corrupt_training_state_is_a_one_line_error(tmp_path, tiny_run):
    train(tiny_run(epochs=1), tmp_path, progress=False)
    state = tmp_path / "last" / "training_state.json"
    values = json.loads(state.read_text())
    del values["loop"]["step"]
    values["loop"]["bogus"] = 1
    state.write_text(json.dumps(values))
    with pytest.raises(VaelabError, match="training state .* is corrupt"):
        train(tiny_run(epochs=2), tmp_path, resume=True, progress=False)


def test_a_nan_validation_loss_stops_training(tmp_path, tiny_run, monkeypatch):
    fake_validation_loss(monkeypatch, total=math.nan, recon=math.nan, kl=0.0)
    with pytest.raises(TrainingDiverged, match="validation loss became nan"):
        train(tiny_run(epochs=2), tmp_path, progress=False)
    assert not (tmp_path / "last").exists()
