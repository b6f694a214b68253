"""The VQ-VAE's second stage: `train_prior` (and `vaelab train-prior`) fits a PixelCNN over a
run's codes into RUN/prior/, loading attaches it, and every command samples and scores with it."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab import VaelabError
from vaelab.analysis.evaluate import evaluate
from vaelab.cli import main
from vaelab.models.code_priors import UniformCodePrior
from vaelab.models.pixelcnn import PixelCNNConfig, PixelCNNPrior
from vaelab.runs import open_run
from vaelab.training import prior_trainer
from vaelab.training.code_prior import PriorTraining, load_prior
from vaelab.training.prior_trainer import train_prior

SMALL = PixelCNNConfig(codebook_size=1, grid=(1, 1), channels=8, layers=2)  # sized by the run


@pytest.fixture(scope="module")
def trained_vqvae(tmp_path_factory) -> Path:
    """A tiny VQ-VAE run on digits (4x4 code grids of 16 entries), trained once."""
    from tests.conftest import _tiny_run

    run = tmp_path_factory.mktemp("vq") / "run"
    config = _tiny_run(2, model={"model": "vqvae", "codebook_size": 16, "code_dim": 4})
    vaelab.train(config, run, progress=False)
    return run


@pytest.fixture
def vq_run(trained_vqvae: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained run, for a test to write into."""
    run = tmp_path / "run"
    shutil.copytree(trained_vqvae, run)
    return run


def fit(run: Path, epochs: int = 2, **options) -> prior_trainer.PriorResult:
    return train_prior(
        run, SMALL, PriorTraining(epochs=epochs, batch_size=256), progress=False, **options
    )


def prior_state(run: Path) -> dict[str, torch.Tensor]:
    prior, _ = load_prior(run / "prior", prefer="last")
    return prior.state_dict()


def metric_lines(run: Path) -> list[dict]:
    records = [
        json.loads(line) for line in (run / "prior" / "metrics.jsonl").read_text().splitlines()
    ]
    for record in records:
        record.pop("epoch_seconds")
    return records


def test_a_fitted_prior_is_saved_in_the_run_and_loading_attaches_it(vq_run):
    before = vaelab.load(vq_run)
    assert isinstance(before.prior, UniformCodePrior) and before.awaiting_prior
    result = fit(vq_run)
    folder = vq_run / "prior"
    assert result.folder == folder and result.epochs == 2
    for entry in ("config.json", "metrics.jsonl", "best", "last"):
        assert (folder / entry).exists(), entry
    assert [r["epoch"] for r in metric_lines(vq_run)] == [1, 2]
    model = vaelab.load(vq_run)
    assert isinstance(model.prior, PixelCNNPrior) and not model.awaiting_prior
    assert model.prior.grid == model.grid and model.prior.codebook_size == 16
    # the prior's held-out NLL is the one its best checkpoint recorded
    assert min(r["val/nll"] for r in metric_lines(vq_run)) == pytest.approx(result.best_nll)


def test_eval_scores_the_bound_under_the_fitted_prior(vq_run):
    fit(vq_run)
    model = vaelab.load(vq_run)
    x = open_run(vq_run).load_data().test.x[:50]
    result = evaluate(model, x, k=100)
    with torch.no_grad():
        indices = model.code_indices(x)
        code_nll = -model.prior.log_prob_indices(indices)
        recon = model.likelihood.nll(model.decode_params(model.codes_of(indices)), x)
    assert result.k == 1 and result.point_posterior
    assert result.kl == pytest.approx(float(code_nll.mean()), rel=1e-5)
    assert result.nll == pytest.approx(float((recon + code_nll).mean()), rel=1e-5)
    assert "gated PixelCNN" in result.prior
    again = evaluate(vaelab.load(vq_run), x, k=1)  # k does not matter for a point mass
    assert again.nll == pytest.approx(result.nll)


def test_resume_continues_bit_for_bit(vq_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(vq_run, other)
    fit(vq_run, epochs=3)
    fit(other, epochs=1)
    train_prior(other, epochs=3, resume=True, progress=False)
    a, b = prior_state(vq_run), prior_state(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metric_lines(vq_run) == metric_lines(other)


class _StopAt:
    """Stands in for the Ctrl-C event: "pressed" after `steps` training steps."""

    def __init__(self, steps: int) -> None:
        self.calls, self.steps = 0, steps

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls >= self.steps


def test_an_interrupt_mid_epoch_saves_and_resume_continues_bit_for_bit(
    vq_run, tmp_path, monkeypatch
):
    other = tmp_path / "other"
    shutil.copytree(vq_run, other)
    fit(vq_run, epochs=2)

    @contextmanager
    def pressed_after_two_steps():
        yield _StopAt(7)  # digits: 5 steps per epoch at batch 256, so step 2 of epoch 2

    with monkeypatch.context() as patch:
        patch.setattr(prior_trainer, "graceful_interrupt", pressed_after_two_steps)
        with pytest.raises(KeyboardInterrupt, match="--resume"):
            fit(other, epochs=2)
    saved = json.loads((other / "prior" / "last" / "training_state.json").read_text())
    assert saved["loop"]["epoch"] == 1 and saved["loop"]["batch"] == 2
    train_prior(other, resume=True, progress=False)
    a, b = prior_state(vq_run), prior_state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metric_lines(vq_run) == metric_lines(other)


def test_samples_come_from_the_fitted_prior(vq_run, tmp_path):
    fit(vq_run)
    model = vaelab.load(vq_run)
    indices = model.prior.sample_indices(6, generator=torch.Generator().manual_seed(3))
    drawn = model.draw_codes(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, model.codes_of(indices))
    assert torch.equal(model.indices_of(drawn), indices)
    assert main(["sample", str(vq_run), "--n", "4", "--out", str(tmp_path / "s.png"), "-q"]) == 0
    assert (tmp_path / "s.png").is_file()


def test_a_bundle_carries_the_prior(vq_run, tmp_path):
    fit(vq_run)
    bundle = tmp_path / "vq.zip"
    assert main(["pack", str(vq_run), str(bundle), "--no-onnx", "-q"]) == 0
    from_bundle, from_run = vaelab.load(bundle), vaelab.load(vq_run)
    assert isinstance(from_bundle.prior, PixelCNNPrior)
    same = torch.Generator().manual_seed(1)
    expected = from_run.sample(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(from_bundle.sample(3, generator=same), expected)
    with pytest.raises(VaelabError, match="never writes into"):
        train_prior(bundle, progress=False)


def test_the_command_line_fits_and_resumes(vq_run, capsys):
    args = ["train-prior", str(vq_run), "--epochs", "1", "--channels", "8", "--layers", "2"]
    assert main([*args, "--no-progress"]) == 0
    assert "best held-out NLL" in capsys.readouterr().out
    assert main(["train-prior", str(vq_run), "--epochs", "2", "--resume", "--no-progress"]) == 0
    assert [r["epoch"] for r in metric_lines(vq_run)] == [1, 2]
    capsys.readouterr()
    assert main(["train-prior", str(vq_run), "--resume", "--lr", "0.1", "--layers", "3"]) != 0
    error = capsys.readouterr().err
    assert "--lr, --layers: a resumed prior keeps its settings" in error
    assert len(error.strip().splitlines()) == 1
    config = json.loads((vq_run / "prior" / "config.json").read_text())
    assert config["network"]["channels"] == 8 and config["training"]["epochs"] == 2


def test_refusals_are_one_line_and_change_nothing(vq_run, tmp_path, tiny_run):
    with pytest.raises(VaelabError, match="nothing to resume"):
        train_prior(vq_run, resume=True, progress=False)
    fit(vq_run, epochs=1)
    state = prior_state(vq_run)
    with pytest.raises(VaelabError, match="already holds a prior"):
        fit(vq_run)
    bigger = PixelCNNConfig(codebook_size=1, grid=(1, 1), channels=16, layers=2)
    with pytest.raises(VaelabError, match="other network settings"):
        train_prior(vq_run, bigger, resume=True, progress=False)
    with pytest.raises(VaelabError, match="only --epochs may change"):
        train_prior(vq_run, training=PriorTraining(epochs=3, lr=0.1), resume=True, progress=False)
    assert all(torch.equal(v, prior_state(vq_run)[k]) for k, v in state.items())
    vae = tmp_path / "vae"
    vaelab.train(tiny_run(1), vae, progress=False)
    with pytest.raises(VaelabError, match="fits the prior of a vqvae run"):
        train_prior(vae, progress=False)
    assert not (vae / "prior").exists()
    for bad in ({"epochs": 0}, {"lr": -1.0}):
        with pytest.raises(VaelabError):
            PriorTraining(**bad)
    with pytest.raises(VaelabError, match="kernel"):
        PixelCNNConfig(codebook_size=4, grid=(2, 2), kernel=4)


def test_force_refits_and_training_the_run_again_clears_its_prior(vq_run, tiny_run):
    fit(vq_run, epochs=1)
    fit(vq_run, epochs=2, force=True)
    assert [r["epoch"] for r in metric_lines(vq_run)] == [1, 2]
    config = tiny_run(1, model={"model": "vqvae", "codebook_size": 16, "code_dim": 4})
    vaelab.train(config, vq_run, force=True, progress=False)
    assert not (vq_run / "prior").exists()  # it modelled the codes of weights now gone


def test_a_prior_of_other_weights_is_used_with_a_warning_and_not_resumed(vq_run, caplog):
    fit(vq_run, epochs=1)
    config = open_run(vq_run).config
    from dataclasses import replace

    longer = replace(config, train=replace(config.train, epochs=3))
    vaelab.train(longer, vq_run, resume=True, progress=False)  # best/ moves on
    with caplog.at_level(logging.WARNING):
        model = vaelab.load(vq_run)
    assert isinstance(model.prior, PixelCNNPrior)
    assert "another checkpoint" in caplog.text
    with pytest.raises(VaelabError, match="changed since this prior was started"):
        train_prior(vq_run, epochs=2, resume=True, progress=False)


def test_the_prior_trains_in_its_own_thread_without_signals(vq_run):
    """graceful_interrupt outside the main thread never fires; fitting still works there."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fit(vq_run, epochs=1)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == [] and (vq_run / "prior" / "best").is_dir()


def test_the_explorer_samples_a_vqvae_from_its_fitted_prior(vq_run):
    from fastapi.testclient import TestClient

    from vaelab.explorer.app import create_app

    fit(vq_run)
    client = TestClient(create_app({"vq": vq_run}), base_url="http://localhost")
    reply = client.post("/api/runs/vq/sample", json={"n": 3, "seed": 5})
    assert reply.status_code == 200
    model = vaelab.load(vq_run)
    z = torch.tensor(reply.json()["z"])
    expected = model.draw_codes(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(z, expected)  # codes of the PixelCNN, not N(0, I)
    assert torch.equal(model.codes_of(model.indices_of(z)), z)


def test_given_a_checkpoint_folder_the_prior_still_goes_to_the_run(vq_run, capsys):
    fit_in = train_prior(vq_run / "best", SMALL, PriorTraining(epochs=1), progress=False)
    assert fit_in.folder == vq_run / "prior"
    assert not (vq_run / "best" / "prior").exists()
    assert main(["train-prior", str(vq_run / "prior"), "--no-progress"]) != 0
    assert "is a prior's folder: pass its run" in capsys.readouterr().err
    with pytest.raises(VaelabError, match="pick one"):
        train_prior(vq_run, resume=True, force=True, progress=False)


def test_an_unreadable_prior_falls_back_on_last_and_else_is_an_error(vq_run, capsys):
    fit(vq_run, epochs=1)
    weights = vq_run / "prior" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    model = vaelab.load(vq_run)  # prior/last/ holds the same epoch
    assert isinstance(model.prior, PixelCNNPrior)
    last = vq_run / "prior" / "last" / "model.safetensors"
    last.write_bytes(b"not safetensors")
    with pytest.raises(VaelabError, match="train-prior RUN --force"):
        vaelab.load(vq_run)
    records = vq_run / "eval.json"
    assert main(["eval", str(vq_run), "--k", "5"]) != 0  # never a uniform-prior figure instead
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "train-prior RUN --force" in errors[0]
    assert not records.exists()


def test_eval_records_the_k_it_used(vq_run):
    fit(vq_run, epochs=1)
    assert main(["eval", str(vq_run), "--k", "50", "-q"]) == 0
    records = json.loads((vq_run / "eval.json").read_text())
    assert list(records) == ["best/test/k=1"] and records["best/test/k=1"]["k"] == 1


def test_embed_gives_a_vqvae_its_quantised_codes(vq_run, tmp_path):
    fit(vq_run, epochs=1)
    out = tmp_path / "codes.npz"
    assert main(["embed", str(vq_run), "--out", str(out), "--split", "test", "-q"]) == 0
    import numpy as np

    saved = np.load(out)
    model = vaelab.load(vq_run)
    x = open_run(vq_run).load_data().test.x
    assert "std" not in saved.files  # a point, not a distribution
    with torch.no_grad():
        expected = model.codes_of(model.code_indices(x[:5]))
    torch.testing.assert_close(torch.from_numpy(saved["mean"][:5]), expected, rtol=0, atol=0)
    assert main(["embed", str(vq_run), "--out", str(tmp_path / "s.npz"), "--samples", "2"]) != 0


def test_pack_refuses_a_prior_of_other_weights_and_the_card_shows_the_bound(vq_run, tmp_path):
    fit(vq_run, epochs=1)
    bundle = tmp_path / "b"
    assert main(["pack", str(vq_run), str(bundle), "--no-onnx", "-q"]) == 0
    card = (bundle / "README.md").read_text()
    assert "bound (the ELBO of a point-mass posterior)" in card
    assert "codebook usage" in card and "gated PixelCNN" in card
    assert "active units" not in card
    assert main(["pack", str(vq_run), str(tmp_path / "c"), "--checkpoint", "last", "-q"]) in (0, 1)
    last_is_best = (vq_run / "last" / "model.safetensors").read_bytes() == (
        vq_run / "best" / "model.safetensors"
    ).read_bytes()
    assert (tmp_path / "c").exists() == last_is_best  # refused unless the weights are the same


def test_a_prior_fitted_with_amp_runs_in_bf16_and_resumes_bit_for_bit(
    vq_run, tmp_path, monkeypatch
):
    """--amp: the PixelCNN in bfloat16 (the loss in fp32), recorded per epoch; a fit resumed
    with the same setting equals the uninterrupted one; without native bfloat16 it is fp32."""
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "1")
    other, exact = tmp_path / "other", tmp_path / "exact"
    shutil.copytree(vq_run, other)
    shutil.copytree(vq_run, exact)
    fit(vq_run, epochs=2, amp=True)
    fit(other, epochs=1, amp=True)
    train_prior(other, epochs=2, resume=True, amp=True, progress=False)
    a, b = prior_state(vq_run), prior_state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metric_lines(vq_run) == metric_lines(other)
    assert {line["precision"] for line in metric_lines(vq_run)} == {"bf16"}
    assert {v.dtype for v in a.values() if v.is_floating_point()} == {torch.float32}
    fit(exact, epochs=2)
    c = prior_state(exact)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the steps did run in bfloat16
    bf16_nll, fp32_nll = metric_lines(vq_run)[-1]["val/nll"], metric_lines(exact)[-1]["val/nll"]
    assert bf16_nll == pytest.approx(fp32_nll, rel=0.02)

    monkeypatch.setenv("VAELAB_NATIVE_BF16", "0")
    fallback = tmp_path / "fallback"
    shutil.copytree(exact, fallback)
    shutil.rmtree(fallback / "prior")
    fit(fallback, epochs=2, amp=True)
    d = prior_state(fallback)
    assert all(torch.equal(c[k], d[k]) for k in c)  # fp32: the run without --amp, exactly
    assert {line["precision"] for line in metric_lines(fallback)} == {"fp32"}
