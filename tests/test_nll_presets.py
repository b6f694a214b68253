"""The likelihood presets are the settings `benchmarks/mnist_nll.py` chose on the validation
split and trained in its final runs: the files a user trains are the ones that were measured;
and the benchmark continues a run cut short rather than starting it again."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaelab
from vaelab.training.callbacks import Callbacks
from vaelab.training.config import RunConfig, read_config_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mnist-nll"


def _benchmark():
    spec = importlib.util.spec_from_file_location("mnist_nll", ROOT / "benchmarks/mnist_nll.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mnist_nll", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _without_seed_and_data_dir(config: RunConfig) -> dict:
    values = config.to_dict()
    values["train"]["seed"] = values["data"]["data_dir"] = None
    return values


@pytest.mark.parametrize("preset", ["factorised", "autoregressive"])
def test_the_preset_file_is_the_chosen_and_measured_setting(preset: str) -> None:
    benchmark = _benchmark()
    selection = json.loads((RESULTS / f"select-{preset}.json").read_text())
    chosen = selection["chosen"]
    assert chosen == min(selection["candidates"], key=lambda n: selection["candidates"][n]["nll"])
    final_path = RESULTS / f"final-{preset}.json"
    epochs = json.loads(final_path.read_text())["epochs"] if final_path.is_file() else None
    assert epochs, f"{final_path} does not say how long the final runs trained"
    wanted = benchmark.preset_config(
        benchmark.PRESETS[preset], chosen, epochs=epochs, seed=0, validation=False
    )
    in_file = RunConfig.from_dict(read_config_file(ROOT / "presets" / f"mnist-{preset}.toml"))
    assert _without_seed_and_data_dir(in_file) == _without_seed_and_data_dir(wanted)


def test_every_final_run_trained_the_recorded_config() -> None:
    for path in sorted(RESULTS.glob("final-*.json")):
        final = json.loads(path.read_text())
        if "config" not in final:  # written before its first seed finished
            continue
        config = RunConfig.from_dict(final["config"])
        assert config.train.epochs == final["epochs"]
        assert config.data.val_fraction == 0.0  # retrained on all 60,000 images


class _StopAfter(Callbacks):
    """Crash the run after epoch `epoch`, as a machine going away would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record: dict) -> None:
        if record["epoch"] == self.epoch:
            raise RuntimeError("the machine went away")


def test_the_benchmark_continues_a_run_cut_short(tiny_run, tmp_path: Path) -> None:
    """A final run lost mid-schedule is continued from last/, not started again: its first
    epochs' records are kept and its weights are those of a run never interrupted."""
    benchmark = _benchmark()
    config = tiny_run(epochs=3, model={"data_shape": [1, 8, 8]})  # as training resolves it
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    vaelab.train(config, whole, progress=False)
    with pytest.raises(RuntimeError, match="went away"):
        vaelab.train(config, cut, progress=False, callbacks=_StopAfter(2))
    before = (cut / "metrics.jsonl").read_text().splitlines()
    assert len(before) == 2 and not benchmark.finished_epochs(cut)

    benchmark.train(config, cut, retrain=False)

    after = (cut / "metrics.jsonl").read_text().splitlines()
    assert after[:2] == before and len(after) == 3
    assert benchmark.finished_epochs(cut) == 3
    for name, tensor in load_file(whole / "last" / "model.safetensors").items():
        assert torch.equal(tensor, load_file(cut / "last" / "model.safetensors")[name]), name


def test_a_runs_training_time_is_its_epochs_at_the_median_pace() -> None:
    """A run paused for a while (its recorded minutes include the pause) reports its epochs at
    the median epoch's pace; an old record without the median keeps its recorded minutes."""
    benchmark = _benchmark()
    paused = {"epochs": 4, "median_epoch_minutes": 0.5, "train_minutes": 30.0}
    assert benchmark.training_minutes(paused) == pytest.approx(2.0)
    assert benchmark.training_minutes({"epochs": 4, "train_minutes": 3.0}) == 3.0
