"""Optimiser and training-loop settings, and the run configuration that bundles every section."""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaelab.data import DataConfig, DataSplits, registered_name
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_text
from vaelab.models import ModelConfig

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("auto", "cpu", "cuda")
ON_NAN = ("stop", "skip")
# Options that moved to the section that owns them; older config files still name the old one.
MOVED_OPTIONS = {
    ("train", "objective"): "model",
    ("train", "k"): "model",
    ("train", "binarize"): "data",
}


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its learning-rate schedule (a pure function of the step)."""

    optimizer: str = "adam"
    lr: float = 1e-3  # Adam's default; right for MLP VAEs on MNIST
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant", or "cosine"/"linear" decay to min_lr_ratio * lr
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None  # max global gradient norm; None = no clipping

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise VaelabError(f"unknown optimizer '{self.optimizer}': use one of adam, adamw")
        if self.schedule not in SCHEDULES:
            raise VaelabError(
                f"unknown schedule '{self.schedule}': use one of {', '.join(SCHEDULES)}"
            )
        if not self.lr > 0:
            raise VaelabError(f"learning rate must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise VaelabError(f"weight decay must be zero or positive, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise VaelabError(f"warm-up steps must be zero or positive, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise VaelabError(f"min-lr ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise VaelabError(f"gradient clipping norm must be positive, got {self.grad_clip}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: length, batching, randomness, device and monitoring."""

    epochs: int = 50  # about 25 s on the digits default, a few minutes for MNIST on a laptop
    batch_size: int = 128
    kl_warmup_epochs: float = 0.0  # KL weight ramps linearly 0 -> 1 (Bowman et al. 2016)
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available
    amp: bool = False  # bfloat16 networks (autocast) where the device has native bfloat16
    early_stopping: int | None = None  # patience in epochs without a better validation loss
    tensorboard: bool = False
    on_nan: str = "stop"  # "stop" at a non-finite loss/gradient, or "skip" that batch
    checkpoint_every: int | None = None  # also save `last` every N steps, mid-epoch
    threads: int | None = None  # CPU threads of this process; None keeps torch's default

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise VaelabError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        if self.device not in DEVICES:
            raise VaelabError(f"unknown device '{self.device}': use one of auto, cpu, cuda")
        if self.epochs <= 0:
            raise VaelabError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise VaelabError(f"batch size must be positive, got {self.batch_size}")
        if self.kl_warmup_epochs < 0:
            raise VaelabError(f"KL warm-up must be zero or positive, got {self.kl_warmup_epochs}")
        if self.on_nan not in ON_NAN:
            raise VaelabError(f"unknown on_nan (--on-nan) '{self.on_nan}': use stop or skip")
        if self.threads is not None and self.threads <= 0:
            raise VaelabError(f"threads must be positive, got {self.threads}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise VaelabError(f"checkpoint interval must be positive, got {self.checkpoint_every}")
        if self.early_stopping is not None and self.early_stopping <= 0:
            raise VaelabError(
                f"early-stopping patience must be positive, got {self.early_stopping}"
            )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a value read from TOML/JSON fits a config field's type annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    parts = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union)
        else (hint,)
    )
    words = [
        # TOML has no null: an option that may be None is left out of the file instead
        names.get(p, "a list of numbers" if typing.get_origin(p) is tuple else "left out")
        for p in parts
    ]
    return " or ".join(dict.fromkeys(words))


def _with_suggestion(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f"'{name}' (did you mean '{match[0]}'?)" if match else f"'{name}'"


def section_from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build one config section, naming unknown keys and wrong types in a one-line error."""
    if not isinstance(values, dict):
        raise VaelabError(f"configuration section [{section}] must be a table of options")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = [_with_suggestion(name, known) for name in unknown]
        raise VaelabError(
            f"unknown option(s) {', '.join(hints)} in configuration section [{section}]; "
            f"its options are: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _matches(value, hints[name]):
            raise VaelabError(
                f"option {name} in configuration section [{section}] must be "
                f"{_describe(hints[name])}, got {value!r}"
            )
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise VaelabError(f"bad value in configuration section [{section}]: {error}") from None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as `config.json` in the run folder and each checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.capacity > 0 and self.train.kl_warmup_epochs <= 0:
            raise VaelabError(
                "--capacity C holds the KL at a target that the KL warm-up raises from 0 to C: "
                "give it --kl-warmup EPOCHS too (Burgess et al. 2018 took about 100,000 steps)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        if not isinstance(values, dict):
            raise VaelabError("a configuration must be a table of sections (model, data, ...)")
        unknown = sorted(map(str, set(values) - set(SECTIONS)))
        if unknown:
            raise VaelabError(
                f"unknown configuration section(s) {', '.join(unknown)}: use {', '.join(SECTIONS)}"
            )
        values = with_moved_options(values)
        return cls(
            **{
                name: section_from_dict(kind, values.get(name, {}), name)
                for name, kind in SECTIONS.items()
            }
        )

    def updated(self, changes: dict[str, dict[str, Any]]) -> RunConfig:
        """A copy with {section: {option: value}} changed (and validated again)."""
        merged = self.to_dict()
        for section, options in changes.items():
            merged[section].update(options)
        return RunConfig.from_dict(merged)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def with_moved_options(values: dict[str, Any]) -> dict[str, Any]:
    """{section: {option: value}} with options of older vaelab versions moved to the section
    that now owns them (e.g. [train] objective -> [model] objective); the new place wins."""
    moved = {
        name: dict(options) if isinstance(options, dict) else options
        for name, options in values.items()
    }
    for (old, option), new in MOVED_OPTIONS.items():
        if isinstance(moved.get(old), dict) and option in moved[old]:
            value = moved[old].pop(option)
            target = moved.setdefault(new, {})
            if isinstance(target, dict):
                target.setdefault(option, value)
    return moved


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file or a run's JSON config into {section: {option: value}}."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"  # a run folder: repeat that run
    if not path.is_file():
        raise VaelabError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise VaelabError(f"config file {path} is not valid {kind}: {error}") from None
    if not isinstance(values, dict):
        raise VaelabError(f"config file {path} must hold a table of sections")
    return values


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with its data paths made absolute (and $VAELAB_DATA written down), so that
    the saved run finds its data again from any working directory or shell."""
    data = config.data
    dataset, data_dir = data.dataset, data.data_dir or os.environ.get("VAELAB_DATA") or None
    if registered_name(dataset) is None and Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    return replace(config, data=replace(data, dataset=dataset, data_dir=data_dir))


def with_data_facts(config: RunConfig, data: DataSplits) -> RunConfig:
    """The config with what the model takes from the loaded data: the shape of its images; for
    a model whose objective needs it (a btcvae's, an m2's), the number of training examples;
    for a label-conditional model (cvae, m2), the number of classes and of labelled images."""
    from vaelab.models import MODELS  # models import training's config module: import it late

    kind = MODELS[config.model.model]
    facts: dict[str, Any] = {"data_shape": tuple(data.shape)}
    if kind.needs_dataset_size:
        facts["dataset_size"] = len(data.train)
    labels = data.train.y
    hidden = labels is not None and bool((labels < 0).any())
    if hidden and config.model.model != "m2":
        raise VaelabError(
            f"--labelled is for the semi-supervised --model m2; a {config.model.model} trains "
            "on every label or none"
        )
    if kind.conditional and not config.model.observe:
        facts["classes"] = data.classes
        if labels is not None:
            facts["labelled_size"] = int((labels >= 0).sum())
    return replace(config, model=replace(config.model, **facts))
