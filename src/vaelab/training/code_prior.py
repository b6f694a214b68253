"""A VQ-VAE's fitted prior on disk: its configuration, and loading it beside a checkpoint.

`vaelab train-prior` (prior_trainer.py) writes the prior into `RUN/prior/`: `config.json`,
`metrics.jsonl`, and `best/` and `last/` checkpoints written like the model's (atomically, in
safetensors, nothing pickled). Loading a run attaches it (`attach_prior`), so that `sample`,
`eval`, the figures and the explorer draw and score codes with it; a bundle carries it as
`prior/`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vaelab.bundles import file_digest
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder
from vaelab.models.pixelcnn import PixelCNNConfig, PixelCNNPrior
from vaelab.training.checkpoint import (
    CONFIG_FILE,
    META_FILE,
    WEIGHTS_FILE,
    read_meta,
    read_tensors,
)
from vaelab.training.metrics import METRICS_FILE
from vaelab.training.runs import BEST, LAST, PRIOR

logger = logging.getLogger(__name__)

PRIOR_FOLDER = PRIOR


@dataclass(frozen=True)
class PriorTraining:
    """How the prior is fitted; saved with it. Only `epochs` may change on resume."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise VaelabError(
                    f"--{name.replace('_', '-')} must be a positive whole number, got {value}"
                )
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed < 2**32:
            raise VaelabError(f"--seed must be a whole number from 0 to 2**32 - 1, got {self.seed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise VaelabError(f"--lr must be a positive number, got {self.lr}")


@dataclass(frozen=True)
class PriorConfig:
    """Everything that rebuilds and refits a prior: the network, its training, and the
    checkpoint of the VQ-VAE whose codes it models (with a digest of its weights)."""

    network: PixelCNNConfig
    training: PriorTraining = field(default_factory=PriorTraining)
    source_checkpoint: str = BEST
    source_digest: str = ""  # sha256 of the source checkpoint's model.safetensors

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PriorConfig:
        try:
            return cls(
                network=PixelCNNConfig(**values["network"]),
                training=PriorTraining(**values.get("training", {})),
                source_checkpoint=str(values.get("source_checkpoint", BEST)),
                source_digest=str(values.get("source_digest", "")),
            )
        except (KeyError, TypeError) as error:
            raise VaelabError(f"not a prior configuration ({error})") from None


def prior_folder(run_dir: Path) -> Path:
    return Path(run_dir) / PRIOR_FOLDER


# --- loading ---------------------------------------------------------------------------------


def load_prior(folder: Path, *, prefer: str = BEST) -> tuple[PixelCNNPrior, PriorConfig]:
    """A fitted prior from a prior folder (its `prefer` checkpoint, falling back on the other
    with a warning when that one is unreadable), or from a checkpoint of one."""
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        return _load_checkpoint(folder)
    other = LAST if prefer == BEST else BEST
    candidates = [
        folder / prefer,
        folder / other,
        folder / f".{prefer}.old",
        folder / f".{other}.old",
    ]
    found = [path for path in candidates if path.is_dir()]
    if not found:
        raise VaelabError(f"{folder} holds no checkpoint of a prior (no {prefer}/ or {other}/)")
    first_error = None
    for checkpoint in found:
        try:
            loaded = _load_checkpoint(checkpoint)
        except VaelabError as error:
            first_error = first_error or error
            continue
        if first_error is not None:
            logger.warning("%s; using %s instead", first_error, checkpoint)
        return loaded
    raise first_error  # type: ignore[misc]


def _load_checkpoint(checkpoint: Path) -> tuple[PixelCNNPrior, PriorConfig]:
    read_meta(checkpoint)
    try:
        config = PriorConfig.from_dict(json.loads((checkpoint / CONFIG_FILE).read_text()))
    except (OSError, ValueError) as error:
        raise VaelabError(
            f"the prior's configuration in {checkpoint} is unreadable ({error})"
        ) from None
    prior = PixelCNNPrior(config.network)
    try:
        prior.load_state_dict(read_tensors(checkpoint / WEIGHTS_FILE))
    except RuntimeError:
        raise VaelabError(
            f"the prior's weights in {checkpoint} do not match its config.json"
        ) from None
    return prior.eval(), config


def find_prior(checkpoint: Path) -> Path | None:
    """The prior folder that belongs to a model checkpoint: `prior/` inside it (a bundle), or
    `prior/` beside it (a run's best/ or last/); None when there is none."""
    for folder in (Path(checkpoint) / PRIOR_FOLDER, Path(checkpoint).parent / PRIOR_FOLDER):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


def fitted_to(config: PriorConfig, checkpoint: Path) -> bool:
    """Whether the prior modelled the codes of this checkpoint's weights (by their digest)."""
    weights = Path(checkpoint) / WEIGHTS_FILE
    if not config.source_digest or not weights.is_file():
        return True  # nothing to compare with
    return file_digest(weights) == config.source_digest


def attach_prior(model: Autoencoder, checkpoint: Path) -> None:
    """Give a model whose prior is fitted after training (a VQ-VAE) the prior saved beside its
    checkpoint: `RUN/prior/` for a run's `RUN/best`, or `prior/` inside a bundle. Without one
    the model keeps the prior of its training. A prior that exists but cannot be loaded is an
    error (a silent fall back would score and sample with another prior); one fitted to another
    checkpoint's codes is used with a warning (its bound is still valid, but loose)."""
    if not model.prior_fitted_after_training:
        return
    folder = find_prior(checkpoint)
    if folder is None:
        return
    try:
        prior, config = load_prior(folder)
    except VaelabError as error:
        raise VaelabError(
            f"{error}; fit the prior again (vaelab train-prior RUN --force) or move {folder} away"
        ) from None
    if not fitted_to(config, checkpoint):
        logger.warning(
            "the prior in %s was fitted to the codes of another checkpoint than %s; fit it "
            "again with: vaelab train-prior %s --force",
            folder,
            checkpoint,
            Path(checkpoint).parent,
        )
    model.set_prior(prior)


# --- the folder, when a prior is fitted ------------------------------------------------


def saved_config(folder: Path, *, resume: bool, force: bool) -> PriorConfig | None:
    """The saved configuration to resume from, None for a fresh prior; refuses to overwrite a
    prior without `force`. Changes nothing on disk."""
    config_file = folder / CONFIG_FILE
    exists = config_file.is_file()
    if resume:  # from last/, written with the weights it describes (the top file is a copy)
        last = folder / LAST
        if not (last / CONFIG_FILE).is_file():
            raise VaelabError(f"nothing to resume: {folder} holds no saved prior")
        try:
            return PriorConfig.from_dict(json.loads((last / CONFIG_FILE).read_text()))
        except (OSError, ValueError) as error:
            raise VaelabError(f"{last / CONFIG_FILE} is unreadable ({error})") from None
    if exists and not force:
        raise VaelabError(
            f"{folder} already holds a prior; pass --resume to continue it or --force to fit "
            "it again"
        )
    return None


def clear_prior(folder: Path) -> None:
    """Delete a prior's own files (nothing else in the folder)."""
    for entry in (CONFIG_FILE, METRICS_FILE, BEST, LAST, f".{BEST}.old", f".{LAST}.old"):
        target = folder / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def settle_config(
    saved: PriorConfig | None,
    network: PixelCNNConfig | None,
    training: PriorTraining | None,
    model: Autoencoder,
    checkpoint: Path,
) -> PriorConfig:
    """The configuration of this fit: the saved one on resume (checked against the request and
    against the run's checkpoint), else the request, sized for the model's codes."""
    digest = file_digest(checkpoint / WEIGHTS_FILE)
    if saved is not None:
        if network is not None and network != saved.network:
            raise VaelabError(
                "cannot resume with other network settings than the prior was started with"
            )
        if saved.source_digest and saved.source_digest != digest:
            raise VaelabError(
                f"the run's {checkpoint.name} checkpoint changed since this prior was started; "
                "fit it again with --force"
            )
        if training is not None:
            changed = {
                k
                for k, v in asdict(training).items()
                if k != "epochs" and v != getattr(saved.training, k)
            }
            if changed:
                options = ", --".join(sorted(changed))
                raise VaelabError(f"cannot resume with other --{options}; only --epochs may change")
            return PriorConfig(
                saved.network, training, saved.source_checkpoint, saved.source_digest
            )
        return saved
    training = training or PriorTraining()
    # Unconditional: a class-conditional prior (PixelCNNConfig.classes) needs conditional
    # runs, whose evaluation and sampling take labels.
    network = replace(
        network or PixelCNNConfig(codebook_size=1, grid=(1, 1)),
        codebook_size=model.config.codebook_size,
        grid=model.grid,
        classes=0,
    )
    return PriorConfig(network, training, checkpoint.name, digest)
