"""Checkpoint folders: round trips, atomic replacement, crash recovery and damaged files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vaelab
from vaelab import ModelConfig, RunConfig, VaelabError, build_model
from vaelab.training import checkpoint as ckpt
from vaelab.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)

CONFIG = RunConfig(model=ModelConfig(data_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,)))


def make_model(seed: int, config: RunConfig = CONFIG) -> vaelab.Autoencoder:
    torch.manual_seed(seed)
    return build_model(config.model)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to prove that loading writes nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name.endswith(".old"))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder with `last` (epoch 1, seed-1 weights) and `best` (seed-2 weights)."""
    save_checkpoint(tmp_path / "last", make_model(1), CONFIG, {"epoch": 1})
    save_checkpoint(tmp_path / "best", make_model(2), CONFIG, {"epoch": 1})
    return tmp_path


# --- round trips -----------------------------------------------------------------------------


def test_checkpoint_folder_layout(run):
    assert sorted(p.name for p in (run / "last").iterdir()) == [
        "config.json",
        "meta.json",
        "model.safetensors",
    ]
    meta = json.loads((run / "last" / "meta.json").read_text())
    assert meta == {"format": "vaelab-checkpoint", "format_version": 1, "epoch": 1}
    assert RunConfig.from_dict(json.loads((run / "last" / "config.json").read_text())) == CONFIG
    assert leftovers(run) == []


def test_load_returns_model_config_and_meta(run):
    model, config, meta = load_checkpoint(run / "last")
    assert config == CONFIG
    assert meta["epoch"] == 1
    assert not model.training
    assert_same_weights(model, make_model(1))


def test_run_folder_prefers_best_unless_asked(run):
    assert_same_weights(vaelab.load(run), make_model(2))
    assert_same_weights(vaelab.load(run, checkpoint="last"), make_model(1))
    assert resolve_checkpoint(run) == run / "best"
    assert resolve_checkpoint(run, prefer="last") == run / "last"
    assert resolve_checkpoint(run / "last") == run / "last"


def test_resave_replaces_the_checkpoint(run):
    save_checkpoint(run / "last", make_model(3), CONFIG, {"epoch": 2})
    model, _, meta = load_checkpoint(run / "last")
    assert meta["epoch"] == 2
    assert_same_weights(model, make_model(3))
    assert leftovers(run) == []


def test_training_state_round_trip(tmp_path):
    model = make_model(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        model.loss(torch.rand(4, 1, 8, 8)).total.backward()
        optimizer.step()
    generator = torch.Generator().manual_seed(9)
    state = TrainingState(
        optimizer=optimizer.state_dict(),
        tensors={"batch_order": generator.get_state()},
        values={"loop": {"epoch": 4, "step": 40, "best_loss": float("inf")}},
    )
    save_checkpoint(tmp_path / "last", model, CONFIG, {"epoch": 4}, state)
    loaded = load_training_state(tmp_path / "last")
    assert loaded.values == {"loop": {"epoch": 4, "step": 40, "best_loss": float("inf")}}
    assert torch.equal(loaded.tensors["batch_order"], generator.get_state())
    restored = torch.optim.Adam(make_model(5).parameters(), lr=1e-3)
    restored.load_state_dict(loaded.optimizer)
    original, copy = optimizer.state_dict(), restored.state_dict()
    as_json = json.dumps(original["param_groups"])  # saved as JSON: tuples come back as lists
    assert json.loads(as_json) == json.loads(json.dumps(copy["param_groups"]))
    assert original["state"].keys() == copy["state"].keys()
    for key, values in original["state"].items():
        assert values.keys() == copy["state"][key].keys()
        assert all(torch.equal(values[name], copy["state"][key][name]) for name in values)


# --- atomic replacement ----------------------------------------------------------------------


class Crash(Exception):
    pass


def crash_on_call(monkeypatch, target, name: str, call: int) -> None:
    """Make `target.name` raise Crash on its `call`-th use (1-based), after doing nothing."""
    original = getattr(target, name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise Crash(f"simulated crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)


@pytest.mark.parametrize(
    ("target", "name", "call"),
    [
        (ckpt, "save_file", 1),  # writing the weights
        (ckpt, "_write_json", 1),  # writing meta.json
        (os, "rename", 1),  # moving the old checkpoint aside
        (os, "rename", 2),  # moving the new one into place
    ],
    ids=["save_file", "write_meta", "rename-old", "rename-new"],
)
def test_crash_while_saving_keeps_the_previous_checkpoint(run, monkeypatch, target, name, call):
    before = snapshot(run / "last")
    crash_on_call(monkeypatch, target, name, call)
    with pytest.raises(Crash):
        save_checkpoint(run / "last", make_model(3), CONFIG, {"epoch": 2})
    monkeypatch.undo()
    assert leftovers(run) == []  # no temporary folder, no stray .old copy
    assert snapshot(run / "last") == before
    model, _, meta = load_checkpoint(run / "last")
    assert meta["epoch"] == 1
    assert_same_weights(model, make_model(1))
    save_checkpoint(run / "last", make_model(3), CONFIG, {"epoch": 2})  # and saving works again
    assert load_checkpoint(run / "last")[2]["epoch"] == 2


def test_hard_crash_between_the_renames_is_recovered_from_the_old_copy(run):
    # What a power cut after `last -> .last.old` and before `tmp -> last` leaves behind.
    os.rename(run / "last", run / ".last.old")
    (run / ".last.tmp-abc123").mkdir()
    assert resolve_checkpoint(run, prefer="last") == run / ".last.old"
    model, _, meta = load_checkpoint(run, prefer="last")
    assert meta["epoch"] == 1
    assert_same_weights(model, make_model(1))
    # The next save puts `last` back and clears the old copy.
    save_checkpoint(run / "last", make_model(3), CONFIG, {"epoch": 2})
    assert not (run / ".last.old").exists()
    assert load_checkpoint(run, prefer="last")[2]["epoch"] == 2


def test_old_copy_is_found_when_it_is_all_that_is_left(tmp_path):
    save_checkpoint(tmp_path / "best", make_model(2), CONFIG, {"epoch": 1})
    os.rename(tmp_path / "best", tmp_path / ".best.old")
    assert_same_weights(vaelab.load(tmp_path), make_model(2))


# --- damaged and foreign checkpoints ---------------------------------------------------------


def truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"")


def garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x80\x04 this is a pickle, honest" * 10)


def garbage_meta(folder: Path) -> None:
    (folder / "meta.json").write_text("{ not json")


def foreign_meta(folder: Path) -> None:
    (folder / "meta.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))


def meta_not_an_object(folder: Path) -> None:
    (folder / "meta.json").write_text("[1, 2, 3]")


def meta_with_bad_version(folder: Path) -> None:
    (folder / "meta.json").write_text(
        json.dumps({"format": "vaelab-checkpoint", "format_version": "2"})
    )


def newer_format(folder: Path) -> None:
    (folder / "meta.json").write_text(
        json.dumps({"format": "vaelab-checkpoint", "format_version": 99})
    )


def garbage_config(folder: Path) -> None:
    (folder / "config.json").write_bytes(b"\xff\xfe garbage")


def config_not_an_object(folder: Path) -> None:
    (folder / "config.json").write_text("[[1, 2], 3]")


def config_with_bad_values(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model": {"latent_dim": 0}}))


def config_of_another_model(folder: Path) -> None:
    RunConfig(model=ModelConfig(data_shape=(1, 8, 8), latent_dim=5)).save(folder / "config.json")


def weights_of_another_model(folder: Path) -> None:
    torch.manual_seed(0)
    other = build_model(ModelConfig(data_shape=(1, 8, 8), latent_dim=5, hidden_dims=(16,)))
    save_file(other.state_dict(), folder / "model.safetensors")


def weights_missing_a_tensor(folder: Path) -> None:
    weights = make_model(1).state_dict()
    weights.pop("decoder.net.0.bias")
    save_file(weights, folder / "model.safetensors")


def missing(name: str):
    def remove(folder: Path) -> None:
        (folder / name).unlink()

    remove.__name__ = f"missing_{name}"
    return remove


DAMAGE = [
    truncate_weights,
    empty_weights,
    garbage_weights,
    garbage_meta,
    foreign_meta,
    meta_not_an_object,
    meta_with_bad_version,
    newer_format,
    garbage_config,
    config_not_an_object,
    config_with_bad_values,
    config_of_another_model,
    weights_of_another_model,
    weights_missing_a_tensor,
    missing("model.safetensors"),
    missing("meta.json"),
    missing("config.json"),
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_checkpoint_raises_one_line_error_and_is_left_untouched(run, damage):
    damage(run / "last")
    before = snapshot(run)
    with pytest.raises(VaelabError) as error:
        load_checkpoint(run / "last")
    message = str(error.value)
    assert "\n" not in message and "\t" not in message
    assert str(run / "last") in message  # says which checkpoint
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["training_state.json", "training_state.safetensors"])
def test_missing_or_damaged_training_state_raises_vaelab_error(tmp_path, name):
    model = make_model(1)
    state = TrainingState(
        optimizer=torch.optim.Adam(model.parameters()).state_dict(), tensors={}, values={}
    )
    save_checkpoint(tmp_path / "last", model, CONFIG, {"epoch": 1}, state)
    (tmp_path / "last" / name).write_bytes(b"{ garbage")
    with pytest.raises(VaelabError, match="corrupt"):
        load_training_state(tmp_path / "last")
    (tmp_path / "last" / name).unlink()
    with pytest.raises(VaelabError, match=name):
        load_training_state(tmp_path / "last")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(VaelabError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaelabError, match="not a vaelab run or checkpoint"):
        vaelab.load(tmp_path / "empty")
