"""`vaelab eval` and `vaelab train --objective iwae --k K`, in-process on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vaelab
from test_cli import FAST, assert_one_line_error, assert_same_weights, run_cli, snapshot
from vaelab.analysis.evaluate import evaluate
from vaelab.data import DataConfig, load_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A binarised VAE, a plain autoencoder and a Gaussian VAE, two epochs each."""
    root = tmp_path_factory.mktemp("eval")
    options = {
        "vae": ("--binarize", "--latent-dim", "3"),
        "ae": ("--model", "ae"),
        "gauss": ("--likelihood", "gaussian", "--latent-dim", "2"),
    }
    for name, extra in options.items():
        code = vaelab.cli.main(
            ["train", "--epochs", "2", "--out", str(root / name), *FAST, "--quiet", *extra]
        )
        assert code == 0
    return {name: root / name for name in options}


def test_eval_prints_the_table_and_writes_eval_json(runs, capsys) -> None:
    code, out, err = run_cli(capsys, "eval", runs["vae"], "--k", "50", "--seed", "3")
    assert code == 0, err
    for label in (
        "negative ELBO",
        "NLL, k=50",
        "active units",
        "of 3",
        "KL per dimension",
        "reconstruction MSE",
        "images/s",
        "binarised (seed 3)",
    ):
        assert label in out, out
    assert out.strip().endswith("eval.json")
    record = json.loads((runs["vae"] / "eval.json").read_text())["best/test/k=50"]
    assert record["k"] == 50 and record["seed"] == 3 and record["binarized"] is True
    assert record["examples"] == 359 and record["split"] == "test"
    assert record["nll"] <= record["neg_elbo"] + 0.05  # the k=50 bound is the tighter one
    assert len(record["kl_per_dim"]) == 3 and record["images_per_second"] > 0


def test_eval_matches_the_library_and_keeps_other_splits(runs, capsys) -> None:
    code, out, _ = run_cli(capsys, "eval", runs["vae"], "--k", "20", "--split", "val", "--json")
    assert code == 0
    printed = json.loads(out)
    model = vaelab.load(runs["vae"])
    val = load_data(DataConfig(dataset="digits"), progress=False).val.x
    expected = evaluate(model, val, k=20, seed=0, binarize=True)
    assert printed["nll"] == pytest.approx(expected.nll, rel=1e-9)
    code, _, _ = run_cli(capsys, "eval", runs["vae"], "--k", "20", "--checkpoint", "last")
    records = json.loads((runs["vae"] / "eval.json").read_text())
    assert {"best/val/k=20", "last/test/k=20", "best/test/k=50"} <= records.keys()


def test_eval_of_an_autoencoder_reports_reconstruction_only(runs, capsys) -> None:
    code, out, err = run_cli(capsys, "eval", runs["ae"], "--limit", "40")
    assert code == 0
    assert "not binary" in err  # digits are grey levels: a cross-entropy, not a likelihood
    assert "reconstruction NLL" in out and "40 images" in out and "NLL, k=" not in out
    record = json.loads((runs["ae"] / "eval.json").read_text())["best/test/first-40"]
    assert record["nll"] is None and record["mse"] > 0


def test_eval_chunk_does_not_change_the_result(runs, capsys) -> None:
    results = []
    for chunk in ("7", "100000"):
        code, out, _ = run_cli(
            capsys, "eval", runs["gauss"], "--k", "30", "--chunk", chunk, "--limit", "25", "--json"
        )
        assert code == 0
        results.append(json.loads(out)["nll"])
    assert results[0] == pytest.approx(results[1], rel=1e-6)  # float32 rounding only


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--k", "0"), "--k: expected a positive whole number"),
        (("--chunk", "-3"), "--chunk: expected a positive whole number"),
        (("--limit", "x"), "--limit: expected a positive whole number"),
        (("--split", "nope"), "invalid choice"),
        (("--binarize",), "--binarize applies to a bernoulli likelihood"),
    ],
)
def test_eval_bad_input_is_one_line_and_changes_nothing(runs, capsys, args, fragment) -> None:
    before = snapshot(runs["gauss"])
    code, _, err = run_cli(capsys, "eval", runs["gauss"], *args)
    assert_one_line_error(code, err, fragment)
    assert snapshot(runs["gauss"]) == before


def test_eval_of_a_checkpoint_folder_is_recorded_under_its_name(runs, capsys) -> None:
    code, _, _ = run_cli(capsys, "eval", runs["gauss"] / "last", "--k", "5", "--limit", "10")
    assert code == 0
    records = json.loads((runs["gauss"] / "eval.json").read_text())
    assert records["last/test/k=5/first-10"]["checkpoint"] == "last"


def test_an_unreadable_eval_json_is_moved_aside(runs, capsys) -> None:
    path = runs["gauss"] / "eval.json"
    path.write_text("my notes, not JSON")
    code, _, err = run_cli(capsys, "eval", runs["gauss"], "--k", "5", "--limit", "3")
    assert code == 0 and "moved it to" in err
    assert (runs["gauss"] / "eval.json.bak").read_text() == "my notes, not JSON"
    assert list(json.loads(path.read_text())) == ["best/test/k=5/first-3"]


def test_one_image_gives_valid_json(runs, capsys) -> None:
    code, out, _ = run_cli(capsys, "eval", runs["gauss"], "--k", "5", "--limit", "1", "--json")
    assert code == 0 and "NaN" not in out
    record = json.loads(out)
    assert record["active_units"] is None and record["nll_stderr"] is None
    assert "NaN" not in (runs["gauss"] / "eval.json").read_text()


def test_huge_k_is_refused(runs, capsys) -> None:
    code, _, err = run_cli(capsys, "eval", runs["gauss"], "--k", str(10**12))
    assert_one_line_error(code, err, "k must be at most 1,000,000")


def test_resume_with_another_objective_is_refused(tmp_path, capsys) -> None:
    run = tmp_path / "r"
    assert run_cli(capsys, "train", "--epochs", "1", *FAST, "--quiet", "--out", run)[0] == 0
    before = snapshot(run)
    code, _, err = run_cli(
        capsys, "train", "--resume", run, "--epochs", "2", "--objective", "iwae", "--k", "5", *FAST
    )
    assert_one_line_error(code, err, "cannot resume with --objective iwae")
    assert snapshot(run) == before


def test_eval_of_a_missing_run(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "eval", tmp_path / "nothing")
    assert_one_line_error(code, err, "does not exist")


def test_iwae_with_k1_trains_exactly_like_the_vae(tmp_path, capsys) -> None:
    """`--objective iwae --k 1` is the VAE objective: bitwise the same weights."""
    common = ("train", "--epochs", "2", *FAST, "--quiet")
    assert run_cli(capsys, *common, "--out", tmp_path / "vae")[0] == 0
    assert (
        run_cli(capsys, *common, "--out", tmp_path / "iwae", "--objective", "iwae", "--k", "1")[0]
        == 0
    )
    assert_same_weights(tmp_path / "vae", tmp_path / "iwae")


def test_iwae_training_records_its_objective(tmp_path, capsys) -> None:
    code, _, err = run_cli(
        capsys,
        "train",
        "--epochs",
        "3",
        *FAST,
        "--quiet",
        "--out",
        tmp_path / "iwae",
        "--objective",
        "iwae",
        "--k",
        "8",
    )
    assert code == 0, err
    config = json.loads((tmp_path / "iwae" / "config.json").read_text())
    assert config["model"]["objective"] == "iwae" and config["model"]["k"] == 8
    metrics = [json.loads(line) for line in (tmp_path / "iwae" / "metrics.jsonl").open()]
    assert metrics[-1]["val/loss"] < metrics[0]["val/loss"]
    # The validation loss is the run's own bound: below its ELBO terms' sum.
    assert metrics[-1]["val/loss"] < metrics[-1]["val/recon"] + metrics[-1]["val/kl"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--objective", "iwae", "--k", "5", "--model", "ae"), "needs a vae"),
        (("--k", "0"), "k (samples per example) must be between 1 and 5000"),
        (("--k", "5001"), "k (samples per example) must be between 1 and 5000"),
        (("--model", "ae", "--autoregressive", "local"), "needs a vae"),
        (("--objective", "bound"), "invalid choice"),
    ],
)
def test_objective_bad_input(tmp_path, capsys, args, fragment) -> None:
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "r", *FAST, *args)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()


def test_eval_on_a_model_trained_with_a_local_context(tmp_path, capsys) -> None:
    code, _, err = run_cli(
        capsys,
        "train",
        "--epochs",
        "2",
        *FAST,
        "--quiet",
        "--out",
        tmp_path / "ar",
        "--autoregressive",
        "local",
    )
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", tmp_path / "ar", "--k", "10")
    assert code == 0 and "NLL, k=10" in out
    assert run_cli(capsys, "sample", tmp_path / "ar", "--n", "4")[0] == 0
    model = vaelab.load(tmp_path / "ar")
    with torch.no_grad():
        assert model.sample(3).shape == (3, 1, 8, 8)
