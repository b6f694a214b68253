"""What a second try-out as a new user found after the first round of fixes: tiny datasets in
plot/report, tick labels, the report's configuration in words, labelled KL, config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from vaelab import ModelConfig, RunConfig, VaelabError
from vaelab.analysis.evaluate import EvalResult
from vaelab.analysis.plots import tick_labels, training_curves
from vaelab.analysis.run_figures import choose_pairs
from vaelab.cli.app import main
from vaelab.cli.evaluate import format_result
from vaelab.cli.info import config_in_words


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("labels", ["none", "one class"])
def test_pairs_exist_for_tiny_splits(n: int, labels: str) -> None:
    y = None if labels == "none" else torch.zeros(n, dtype=torch.long)
    pairs = choose_pairs(y, n, 4, torch.Generator().manual_seed(0))
    assert len(pairs) == 4
    for a, b in pairs:
        assert 0 <= a < n and 0 <= b < n
        assert a != b or n == 1  # an example is paired with itself only when it is alone


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3])
def test_plot_and_report_of_a_tiny_dataset(tmp_path: Path, n: int) -> None:
    """A .npy of 1 or 3 images trains; plot and report draw every figure, no traceback."""
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((n, 8, 8), dtype=np.float32))
    for args in (
        ["train", "--dataset", "tiny.npy", "--epochs", "2", "--out", "run", "--no-progress"],
        ["plot", "run"],
        ["report", "run"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "vaelab", "-q", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert (tmp_path / "run" / "plots" / "interpolations.png").is_file()
    assert (tmp_path / "run" / "report.html").is_file()


def test_tick_labels_stay_distinct() -> None:
    assert tick_labels(torch.tensor([2.26, 2.34, 1.0])) == ["2.26", "2.34", "1"]
    assert tick_labels(torch.tensor([-1.0, -1.2e-7, 1.0]), sign=True) == ["-1", "0", "+1"]
    assert tick_labels(torch.tensor([0.5, 1.0, 1.5])) == ["0.5", "1", "1.5"]


def test_training_curves_tick_whole_epochs() -> None:
    records = [
        {"epoch": e, "train/loss": 10.0 - e, "train/recon": 9.0, "train/kl": 1.0} for e in (1, 2, 3)
    ]
    fig = training_curves(records)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_report_configuration_says_what_none_means() -> None:
    shown = config_in_words(RunConfig().to_dict())
    assert shown["model"]["sigma"] == "learned"
    assert shown["optim"]["grad_clip"] == "off"
    assert None not in [v for section in shown.values() for v in section.values()]


def test_eval_table_labels_the_kl_of_each_dimension() -> None:
    result = EvalResult(
        model="vae",
        examples=10,
        binarized=False,
        recon=1.0,
        mse=0.1,
        seconds=1.0,
        k=5,
        seed=0,
        kl=3.0,
        neg_elbo=4.0,
        nll=3.5,
        nll_stderr=0.1,
        nll_bits_per_dim=0.1,
        active_units=2,
        latent_dim=3,
        kl_per_dim=[0.5, 2.5, 0.0],
        images_per_second=1.0,
    )
    record = {"checkpoint": "best", "split": "test", "dataset": "digits"}
    text = format_result(result, record, Path("run"))
    assert "z2=2.50 z1=0.50 z3=0.00" in text


def test_config_errors_say_to_leave_an_unset_option_out() -> None:
    with pytest.raises(VaelabError, match="must be a number or left out, got 'learned'"):
        RunConfig.from_dict({"model": {"sigma": "learned"}})


@pytest.mark.parametrize("beta", [float("inf"), float("nan"), -1.0])
def test_beta_must_be_finite_and_not_negative(beta: float) -> None:
    with pytest.raises(VaelabError, match="beta must be zero or a positive finite number"):
        ModelConfig(beta=beta)


def test_wrong_shapes_get_one_line_errors_from_the_python_api() -> None:
    model = vaelab.build_model(ModelConfig(data_shape=(1, 8, 8), latent_dim=2))
    with pytest.raises(VaelabError, match=r"x has shape \(4, 1, 28, 28\), but this model takes"):
        model.encode(torch.rand(4, 1, 28, 28))
    with pytest.raises(VaelabError, match=r"z has shape \(3, 5\), but this model's codes are"):
        model.decode(torch.zeros(3, 5))
    with pytest.raises(VaelabError, match="but this model takes batches of images"):
        vaelab.evaluate(model, torch.rand(4, 1, 28, 28), k=5)


def test_a_resume_error_names_what_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything is loaded, and before the 'already trained' check."""
    config = RunConfig.from_dict(
        {"model": {"hidden_dims": [8]}, "train": {"epochs": 1, "device": "cpu"}}
    )
    vaelab.train(config, tmp_path / "run", progress=False)
    assert main(["train", "--resume", str(tmp_path / "run"), "--latent-dim", "5", "-q"]) == 1
    err = capsys.readouterr().err
    assert "different [model] options" in err and "(latent_dim 2 -> 5)" in err
    assert "already trained" not in err
