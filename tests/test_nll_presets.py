"""The likelihood presets are the settings `benchmarks/mnist_nll.py` chose on the validation
split and trained in its final runs: the files a user trains are the ones that were measured."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

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
