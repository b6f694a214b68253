"""Checkpoints as folders: `config.json`, `model.safetensors`, `meta.json`, and for resuming,
`training_state.safetensors` + `training_state.json`. Nothing is ever unpickled.

A checkpoint is written into a temporary sibling folder and then renamed into place, so a crash
at any moment leaves either the old checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaelab.errors import VaelabError
from vaelab.files import make_private_temp_public
from vaelab.formats import check_header
from vaelab.models import Autoencoder, build_model
from vaelab.training.config import RunConfig

FORMAT = "vaelab-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"


@dataclass
class TrainingState:
    """What resuming needs beyond the weights: optimiser, loop position, RNG states."""

    optimizer: dict[str, Any]  # torch optimizer state_dict
    tensors: dict[str, torch.Tensor]  # RNG states and other tensors, by name
    values: dict[str, Any]  # JSON-able loop state: epoch, step, best loss, patience...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, values: Any) -> None:
    path.write_text(json.dumps(values, indent=2) + "\n")


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate an optimizer state_dict into tensors (for safetensors) and JSON values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = tensor
    for param_id, scalars in values["scalars"].items():
        state.setdefault(int(param_id), {}).update(scalars)
    return {"state": state, "param_groups": values["param_groups"]}


def _discard(folder: Path) -> None:
    """Delete `folder`, renamed to a temporary name first: a crash halfway through the delete
    then leaves a stray temporary folder, never a half-deleted one under a checkpoint's name."""
    if not folder.exists():
        return
    name = folder.name.lstrip(".").removesuffix(".old")  # `.last.old` -> `.last.tmp-old-...`,
    trash = folder.with_name(f".{name}.tmp-old-{uuid.uuid4().hex}")  # which a resume clears
    try:
        os.rename(folder, trash)
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(
    path: Path,
    model: Autoencoder,
    config: RunConfig,
    meta: dict[str, Any],
    training_state: TrainingState | None = None,
) -> None:
    """Write the checkpoint folder `path` atomically (replacing any previous one)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        make_private_temp_public(tmp)
        config.save(tmp / CONFIG_FILE)
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        _write_json(tmp / META_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
        if training_state is not None:
            opt_tensors, opt_values = _split_optimizer_state(training_state.optimizer)
            tensors = {f"rng.{k}": v.cpu().contiguous() for k, v in training_state.tensors.items()}
            save_file({**opt_tensors, **tensors}, tmp / STATE_TENSORS_FILE)
            _write_json(tmp / STATE_JSON_FILE, {"optimizer": opt_values, **training_state.values})
        for file in tmp.iterdir():
            make_private_temp_public(file)  # safetensors writes owner-only files
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            _discard(old)
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.rename(old, path)  # put the previous checkpoint back where it was
            raise
        _fsync_dir(path.parent)
        _discard(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_checkpoint(path: str | Path, *, prefer: str = "best") -> Path:
    """A checkpoint folder from a run folder (its `best`, else `last`) or a checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise VaelabError(f"{path} does not exist")
    if (path / META_FILE).is_file() or (path / WEIGHTS_FILE).is_file():
        return path
    for name in (prefer, "last", "best"):
        candidate = path / name
        if candidate.is_dir():
            return candidate
        # A crash between the two renames of save_checkpoint leaves only the old copy.
        old = path / f".{name}.old"
        if old.is_dir():
            return old
    raise VaelabError(f"{path} is not a vaelab run or checkpoint folder (no {META_FILE} found)")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VaelabError(f"checkpoint {path.parent} has no {path.name}: {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VaelabError(f"checkpoint file {path} is corrupt ({error})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise VaelabError(f"checkpoint {path.parent} has no {path.name}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise VaelabError(f"checkpoint file {path} is corrupt or truncated ({error})") from None


def read_meta(checkpoint: Path) -> dict[str, Any]:
    meta = _read_json(checkpoint / META_FILE, "not a vaelab checkpoint")
    check_header(
        meta,
        file=checkpoint / META_FILE,
        owner=checkpoint,
        kind="vaelab checkpoint",
        format=FORMAT,
        newest=FORMAT_VERSION,
    )
    return meta


def read_config(checkpoint: Path) -> RunConfig:
    values = _read_json(checkpoint / CONFIG_FILE, "its configuration is missing")
    try:
        return RunConfig.from_dict(values)
    except VaelabError as error:
        raise VaelabError(f"{checkpoint / CONFIG_FILE}: {error}") from None


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    prefer: str = "best",
    with_prior: bool = True,
) -> tuple[Autoencoder, RunConfig, dict[str, Any]]:
    """Rebuild the model of a run or checkpoint folder: (model in eval mode, config, meta).

    `with_prior`: a model whose prior is fitted after training (a VQ-VAE) gets the prior saved
    beside the checkpoint, where there is one (see `vaelab.training.code_prior`)."""
    checkpoint = resolve_checkpoint(path, prefer=prefer)
    meta = read_meta(checkpoint)
    config = read_config(checkpoint)
    model = build_model(config.model)
    weights = read_tensors(checkpoint / WEIGHTS_FILE)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = " ".join(line.strip() for line in str(error).strip().splitlines()[0:2])
        raise VaelabError(
            f"weights in {checkpoint} do not match its config.json ({first})"
        ) from None
    if with_prior:
        from vaelab.training.code_prior import attach_prior  # it imports this module

        attach_prior(model, checkpoint)
    return model.to(device).eval(), config, meta


def load_training_state(checkpoint: Path) -> TrainingState:
    """The optimiser, loop and RNG state saved beside a `last` checkpoint's weights."""
    tensors = read_tensors(checkpoint / STATE_TENSORS_FILE)
    values = _read_json(checkpoint / STATE_JSON_FILE, "it cannot be resumed")
    try:
        optimizer = _join_optimizer_state(tensors, values.pop("optimizer"))
    except (KeyError, ValueError, AttributeError) as error:
        raise VaelabError(f"training state in {checkpoint} is corrupt ({error})") from None
    rng = {k.removeprefix("rng."): v for k, v in tensors.items() if k.startswith("rng.")}
    return TrainingState(optimizer=optimizer, tensors=rng, values=values)
