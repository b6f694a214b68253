"""`vaelab eval --disentanglement` and `evaluate_disentanglement`: a run's codes scored against
its data's known factors, from the shapes dataset or an .npz file with a factors array."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from vaelab import DataConfig, VaelabError, load_data, train
from vaelab.cli.app import main
from vaelab.disentanglement import score_all
from vaelab.disentanglement.evaluate import encode_codes, evaluate_disentanglement
from vaelab.runs import open_run


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory, tiny_run_module):
    run = tmp_path_factory.mktemp("shapes") / "run"
    config = tiny_run_module(
        model={"model": "btcvae", "latent_dim": 4, "beta": 4.0},
        data={"dataset": "shapes", "image_size": 16},
        train={"epochs": 2, "batch_size": 256},
    )
    train(config, run, progress=False)
    return run


@pytest.fixture(scope="module")
def tiny_run_module():
    from tests.conftest import _tiny_run

    return _tiny_run


def test_the_command_prints_every_metric_with_its_definition_and_keeps_the_record(
    shapes_run, capsys
):
    assert main(["eval", str(shapes_run), "--disentanglement", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for title in ("MIG", "DCI disentanglement", "DCI completeness", "DCI informativeness",
                  "SAP", "FactorVAE score"):  # fmt: skip
        assert f"  {title} " in out
    for source in ("Chen et al. 2018", "Eastwood & Williams 2018", "Kumar et al. 2018",
                   "Kim & Mnih 2018"):  # fmt: skip
        assert source in out
    assert "seed 3" in out and "train_votes 10000" in out and "bins 20" in out
    for factor in ("shape", "scale", "orientation", "x", "y"):
        assert f"    {factor} " in out
    records = json.loads((shapes_run / "eval.json").read_text())
    record = records["best/test/disentanglement/seed=3"]
    trained = open_run(shapes_run)
    split = trained.choose_split("test")
    direct = evaluate_disentanglement(
        trained.model, split.x, split.factors, split.factor_info, seed=3
    )
    assert record["scores"] == pytest.approx(direct.scores, abs=0)
    assert record["examples"] == len(split.x) and record["factors"][0] == "shape"
    assert np.array(record["mutual_info_nats"]).shape == (4, 5)


def test_scores_do_not_depend_on_the_batch_size(shapes_run):
    trained = open_run(shapes_run)
    split = trained.choose_split("test")
    codes = [encode_codes(trained.model, split.x, batch_size=size)[0] for size in (7, 100, 4096)]
    # the same codes up to float rounding (BLAS sums a matrix product in an order that can
    # depend on its number of rows): every metric sees the whole set, never one batch
    assert all(np.allclose(codes[0], c, rtol=0, atol=1e-5) for c in codes[1:])
    small, large = (
        evaluate_disentanglement(
            trained.model, split.x, split.factors, split.factor_info, batch_size=size
        )
        for size in (13, 2048)
    )
    assert small.scores == pytest.approx(large.scores, abs=1e-9)


def test_limit_and_json(shapes_run, capsys):
    assert main(["eval", str(shapes_run), "--disentanglement", "--limit", "300", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.split("\n" + str(shapes_run))[0])
    assert record["examples"] == 300
    assert "best/test/disentanglement/sample-300" in json.loads(
        (shapes_run / "eval.json").read_text()
    )


def test_data_without_factors_and_amp_are_one_line_errors(tmp_path, tiny_run, shapes_run, capsys):
    run = tmp_path / "digits"
    train(tiny_run(epochs=1), run, progress=False)
    capsys.readouterr()
    assert main(["eval", str(run), "--disentanglement"]) == 1
    err = capsys.readouterr().err
    assert "needs data with known factors" in err and "digits has none" in err
    assert err.count("\n") == 1
    assert main(["eval", str(shapes_run), "--disentanglement", "--amp"]) == 1
    assert "--amp applies to the likelihood" in capsys.readouterr().err


# --- factors from an .npz file ---------------------------------------------------------------


def test_an_npz_with_factors_gives_indices_names_and_kinds(tmp_path):
    n = 60
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 3, n)  # categorical, integer
    size = rng.choice([0.25, 0.5, 1.0], n)  # ordinal, float values
    path = tmp_path / "toy.npz"
    np.savez(
        path,
        x=rng.random((n, 4, 4)).astype(np.float32),
        factors=np.stack([colour, size], axis=1),
        factor_names=np.array(["colour", "size"]),
        factor_categorical=np.array([True, False]),
    )
    data = load_data(DataConfig(dataset=str(path), test_fraction=0.2), progress=False)
    info = data.factors
    assert info.names == ("colour", "size") and info.categorical == (True, False)
    assert info.values == ((0.0, 1.0, 2.0), (0.25, 0.5, 1.0))
    for split in (data.train, data.val, data.test):
        assert split.factors.shape == (len(split), 2)
    rows = torch.cat([data.train.factors, data.val.factors, data.test.factors])
    assert sorted(map(tuple, rows.tolist())) == sorted(
        zip(colour.tolist(), np.searchsorted([0.25, 0.5, 1.0], size).tolist(), strict=True)
    )


def test_npz_factor_defaults_and_bad_factor_arrays(tmp_path):
    x = np.zeros((10, 3, 3), dtype=np.float32)
    path = tmp_path / "plain.npz"
    np.savez(path, x=x, factors=np.arange(10) % 2)
    info = load_data(DataConfig(dataset=str(path)), progress=False).factors
    assert info.names == ("factor1",) and info.categorical == (False,)
    cases = {
        "wrong_rows": ({"factors": np.zeros((9, 2))}, "shape (10, F)"),
        "nan": ({"factors": np.full((10, 1), np.nan)}, "NaN or infinite"),
        "names": ({"factors": np.zeros((10, 2)), "factor_names": np.array(["a"])}, "2 strings"),
        "flags": (
            {"factors": np.zeros((10, 1)), "factor_categorical": np.array([0.5])},
            "1 booleans",
        ),
        "continuous": ({"factors": np.linspace(0, 1, 10)}, None),
    }
    for name, (arrays, message) in cases.items():
        bad = tmp_path / f"{name}.npz"
        np.savez(bad, x=x, **arrays)
        if message is None:  # ten distinct values are still discrete enough
            assert load_data(DataConfig(dataset=str(bad)), progress=False).factors.sizes == (10,)
            continue
        with pytest.raises(VaelabError, match=re.escape(message)) as raised:
            load_data(DataConfig(dataset=str(bad)), progress=False)
        assert "\n" not in str(raised.value)


def test_codes_equal_to_npz_factors_score_one_through_the_pipeline(tmp_path):
    """The known answer end to end: factors read from an .npz, codes equal to their values
    rescaled and permuted, scored by score_all as `vaelab eval` does."""
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(5), np.arange(4), indexing="ij"), -1)
    factors = grid.reshape(-1, 3)
    path = tmp_path / "grid.npz"
    np.savez(path, x=np.zeros((len(factors), 2, 2), np.float32), factors=factors * 10)
    data = load_data(DataConfig(dataset=str(path), val_fraction=0.0, test_fraction=0.0))
    indices = data.train.factors.numpy()
    codes = indices[:, [2, 0, 1]] * np.array([-2.0, 0.5, 3.0]) + 1.0
    scores = score_all(codes, indices, data.factors.categorical, names=data.factors.names)
    assert scores["mig"].score == pytest.approx(1.0, abs=1e-12)
    assert scores["factorvae"].score == 1.0
    assert scores["dci"].disentanglement > 0.99


def test_a_vae_is_scored_by_both_mig_estimators_and_an_autoencoder_by_the_binned_one(
    tmp_path, shapes_run, tiny_run
):
    trained = open_run(shapes_run)
    split = trained.choose_split("test")
    result = evaluate_disentanglement(trained.model, split.x, split.factors, split.factor_info)
    assert result.mig_posterior is not None
    assert result.scores["mig_posterior"] == result.mig_posterior.score
    assert result.to_dict()["definitions"]["mig_posterior"].startswith("MIG")
    config = tiny_run(
        epochs=1,
        model={"model": "ae", "latent_dim": 3},
        data={"dataset": "shapes", "image_size": 16},
    )
    ae = train(config, tmp_path / "ae", progress=False).model
    point = evaluate_disentanglement(ae, split.x, split.factors, split.factor_info)
    assert point.mig_posterior is None and "mig_posterior" not in point.scores
    assert point.to_dict()["mig_posterior_per_factor"] is None
