"""The scoring classifier and its cache, and `compare_runs` end to end on tiny digit runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import DataConfig, VaelabError, load_data, train
from vaelab.analysis import classifier as classifier_module
from vaelab.analysis.classifier import ClassifierNet, ClassifierUnavailable, classifier_for
from vaelab.analysis.compare_report import MEASURES
from vaelab.analysis.measures import DEFINITIONS
from vaelab.cli.compare import compare_runs

SMALL = {"n_samples": 200, "n_pairs": 20}  # enough to exercise every measure, quickly


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One classifier cache for the module, so the digits classifier trains once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(cache_dir, monkeypatch) -> Path:
    monkeypatch.setenv("VAELAB_CACHE", str(cache_dir))
    return cache_dir


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(dataset="digits"), progress=False)


@pytest.fixture(scope="module")
def unlabelled_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arrays") / "blobs.npy"
    np.save(path, np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32))
    return path


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 5, 7), (1, 1, 10), (1, 1, 1)])
def test_classifier_network_takes_any_image_shape(shape):
    network = ClassifierNet(shape, 4)
    x = torch.rand(3, *shape)
    assert network(x).shape == (3, 4)
    assert network.features(x).shape == (3, classifier_module.FEATURES)


def test_classifier_is_trained_once_then_loaded_from_the_cache(cache, digits, monkeypatch):
    calls = []
    original = classifier_module.train_classifier

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(classifier_module, "train_classifier", counting)
    first = classifier_for(digits)  # trains, unless an earlier test already cached it
    second = classifier_for(digits)
    assert len(calls) <= 1
    assert second.path == first.path and second.path.parent == cache / "classifiers"
    assert {p.name for p in second.path.iterdir()} == {"classifier.json", "model.safetensors"}
    assert second.test_accuracy == pytest.approx(first.test_accuracy)
    assert second.test_accuracy > 0.8 and second.accuracy_split == "test"
    probs = second.probabilities(digits.test.x)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(probs)), atol=1e-5)
    accuracy = (probs.argmax(dim=1) == digits.test.y).float().mean()
    assert float(accuracy) == pytest.approx(second.test_accuracy, abs=1e-6)
    assert second.features(digits.test.x[:5]).shape == (5, 128)


def test_a_corrupt_cache_entry_is_trained_again(cache, digits):
    entry = classifier_for(digits).path
    (entry / "model.safetensors").write_bytes(b"not safetensors")
    again = classifier_for(digits)
    assert again.test_accuracy > 0.8
    assert (entry / "model.safetensors").stat().st_size > 1000


def test_unlabelled_data_has_no_classifier(cache, unlabelled_file):
    data = load_data(DataConfig(dataset=str(unlabelled_file)), progress=False)
    with pytest.raises(ClassifierUnavailable, match="no class labels"):
        classifier_for(data)


@pytest.fixture
def tiny_runs(tiny_run, tmp_path) -> list[Path]:
    """A standard autoencoder and a VAE, 2 epochs each on digits (a fraction of a second)."""
    runs = [tmp_path / "runs" / kind for kind in ("ae", "vae")]
    for run in runs:
        train(tiny_run(2, model={"model": run.name}), run, progress=False)
    return runs


def test_compare_writes_figure_json_and_table_with_every_measure(cache, tiny_runs, tmp_path):
    result = compare_runs(tiny_runs, tmp_path / "out", sampler="gmm", seed=0, **SMALL)
    assert result.figure.stat().st_size > 1000 and result.figure.name == "comparison.png"
    assert [r.model for r in result.runs] == ["ae", "vae"]
    assert result.unavailable == {}
    for run in result.runs:
        assert set(run.measures) == set(MEASURES)
        assert all(value is not None for value in run.measures.values()), run.measures
        assert 0 <= run.measures["decodable_prior"] <= 1
        assert 0 <= run.measures["gap_fraction"] <= 1
        assert 1 / 15 - 1e-9 <= run.measures["jump_mean"] <= run.measures["jump_max"] <= 1
        assert run.measures["frechet_prior"] >= 0
    saved = json.loads(result.json.read_text())
    assert saved["settings"]["n_samples"] == 200 and saved["settings"]["samplers"] == [
        "prior",
        "gmm",
    ]
    assert saved["classifier"]["accuracy"] > 0.8
    assert saved["runs"][1]["measures"] == pytest.approx(result.runs[1].measures)
    table = result.table.read_text()
    assert "| decodable, z ~ prior |" in table and "n/a" not in table
    for text in DEFINITIONS.values():
        assert text in table
    again = compare_runs(tiny_runs, tmp_path / "again", sampler="gmm", seed=0, **SMALL)
    assert again.runs[0].measures == result.runs[0].measures  # same seed, same numbers


def test_compare_prior_only_reports_gmm_as_not_requested(cache, tiny_runs, tmp_path):
    result = compare_runs(tiny_runs[:1], tmp_path, n_samples=50, n_pairs=5)
    assert result.runs[0].measures["frechet_gmm"] is None
    assert "not requested" in result.unavailable["frechet_gmm"]
    assert "n/a" in result.table.read_text()


def test_runs_on_different_data_are_refused(cache, tiny_run, tiny_runs, unlabelled_file, tmp_path):
    other = tmp_path / "other"
    train(tiny_run(1, data={"dataset": str(unlabelled_file)}), other, progress=False)
    with pytest.raises(VaelabError, match="runs were trained on different data"):
        compare_runs([tiny_runs[0], other], tmp_path / "out", **SMALL)
    assert not (tmp_path / "out").exists()
    # Alone, the unlabelled run compares, without the measures that need a classifier.
    result = compare_runs([other], tmp_path / "alone", n_samples=50, n_pairs=5)
    measures = result.runs[0].measures
    assert measures["decodable_prior"] is None and measures["gap_fraction"] is not None
    assert "no class labels" in result.unavailable["decodable_prior"]
    assert "no class labels" in result.table.read_text()


def test_compare_checks_its_options(cache, tiny_runs, tmp_path):
    with pytest.raises(VaelabError, match="unknown sampler"):
        compare_runs(tiny_runs, tmp_path, sampler="flow")
    with pytest.raises(VaelabError, match="at least one run"):
        compare_runs([], tmp_path)
    with pytest.raises(VaelabError, match="n_pairs"):
        compare_runs(tiny_runs, tmp_path, n_pairs=1)
