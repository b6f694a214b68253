"""Runs written by vaelab before the model parts were reshaped (tests/data/legacy-*: `objective`,
`k` and `binarize` were [train] options then) still load, measure the same and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vaelab import DataConfig, RunConfig, evaluate, load, load_data
from vaelab.training import read_config_file, train

DATA = Path(__file__).parent / "data"
# Measured with the previous version: evaluate(..., k=50, seed=0) on the first 40 test digits.
REFERENCE = json.loads((DATA / "legacy-reference.json").read_text())


def test_old_config_files_move_options_to_their_new_sections() -> None:
    config = RunConfig.from_dict(read_config_file(DATA / "legacy-vae"))
    assert (config.model.objective, config.model.k, config.data.binarize) == ("iwae", 2, True)
    assert load(DATA / "legacy-vae").config.objective == "iwae"


def test_new_sections_win_over_old_ones() -> None:
    values = {"train": {"k": 3, "binarize": False}, "model": {"k": 5}, "data": {"binarize": True}}
    config = RunConfig.from_dict(values)
    assert (config.model.k, config.data.binarize) == (5, True)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_old_runs_measure_as_before(name: str) -> None:
    model = load(DATA / name)
    x = load_data(DataConfig(dataset="digits"), progress=False).test.x[:40]
    result = evaluate(model, x, k=50, seed=0, binarize=name == "legacy-vae")
    expected = REFERENCE[name]
    for key in ("nll", "neg_elbo", "recon", "mse"):
        if expected[key] is None:
            assert getattr(result, key) is None
        else:  # the same samples, formulas rearranged: equal up to float32 rounding
            assert getattr(result, key) == pytest.approx(expected[key], rel=1e-6), key


@pytest.mark.parametrize("name", ["legacy-dae", "legacy-gaussian-ar"])
def test_old_runs_have_the_same_loss(name: str) -> None:
    model = load(DATA / name)
    x = load_data(DataConfig(dataset="digits"), progress=False).test.x[:40]
    with torch.no_grad():
        terms = model.loss(x, generator=torch.Generator().manual_seed(0))
    measured = [float(terms.total), float(terms.recon), float(terms.kl)]
    assert measured == pytest.approx(REFERENCE[name]["loss"], rel=1e-5, abs=1e-6)


def test_an_old_run_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(DATA / "legacy-vae", run)
    config = RunConfig.from_dict(read_config_file(run)).updated({"train": {"epochs": 3}})
    result = train(config, run, resume=True, progress=False)
    assert result.epochs == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["objective"] == "iwae" and "objective" not in saved["train"]
