"""What one training run holds between steps, and how it is saved to and restored from `last/`."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaelab.data import DataSplits
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder, LossTerms
from vaelab.training.averages import RunningSums
from vaelab.training.callbacks import Callbacks
from vaelab.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from vaelab.training.config import RunConfig
from vaelab.training.distributed import Distributed
from vaelab.training.metrics import MetricsLog
from vaelab.training.precision import Precision
from vaelab.training.runs import BEST, LAST
from vaelab.version import __version__

logger = logging.getLogger(__name__)


class TrainingDiverged(VaelabError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class LossModule(nn.Module):
    """The model's loss as `forward`, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x: torch.Tensor,
        *,
        y: torch.Tensor | None = None,
        kl_scale: float,
        generator: torch.Generator | None,
    ) -> LossTerms:
        if y is None:  # unconditional models: the call they have always had
            return self.model.loss(x, kl_scale=kl_scale, generator=generator)
        return self.model.loss(x, y=y, kl_scale=kl_scale, generator=generator)


@dataclass(frozen=True)
class LabelledStream:
    """The labelled images of a semi-supervised run, one batch of them beside every batch of
    unlabelled ones (Kingma et al. 2014). The batch at a step is a pure function of the seed
    and the step (a fresh seeded permutation per pass over the labelled images), so a resumed
    run draws the same ones without saving any state."""

    x: torch.Tensor  # (N_l, C, H, W) on the device
    y: torch.Tensor  # (N_l,)
    batch_size: int
    seed: int

    def indices(self, step: int) -> torch.Tensor:
        per_pass = math.ceil(len(self.y) / self.batch_size)
        cycle, position = divmod(step, per_pass)
        # a seed per pass, apart from the run's other generators (seed, seed + 1 + ...)
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle + 7)
        perm = torch.randperm(len(self.y), generator=order)
        return perm[position * self.batch_size : (position + 1) * self.batch_size]


@dataclass
class LoopState:
    """The loop's position and bookkeeping; saved as JSON in `last/training_state.json`."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps taken
    batch: int = 0  # batches done in the unfinished epoch (0 at an epoch's end)
    best_loss: float = math.inf
    since_best: int = 0  # epochs since the best loss improved
    skipped: int = 0  # batches dropped by on_nan="skip"


def make_optimizer(model: Autoencoder, config: RunConfig) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel: one pass over the parameters instead of a dozen, which
    makes a step of the classic MNIST MLP about 20% faster on a CPU at batch 128."""
    optim = config.optim
    kind = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    groups = model.optimizer_groups()  # one group, or the model's own (FactorVAE's)
    return kind(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=True)


@dataclass
class Session:
    """One process's training run: model, optimiser, data, generators and loop state. It saves
    itself to `last/` and `best/` and restores itself from `last/`."""

    config: RunConfig
    run_dir: Path
    group: Distributed
    model: Autoencoder
    step_module: nn.Module  # the model's loss; DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    train_x: torch.Tensor  # (N, C, H, W) on the device; a semi-supervised run's unlabelled ones
    val_x: torch.Tensor | None
    batch_order: torch.Generator  # CPU; the same on every rank
    noise: torch.Generator  # on the device; different on every rank
    epoch_order: torch.Tensor  # batch_order's state when the current epoch began
    epoch_sums: RunningSums  # this process's loss sums over the unfinished epoch
    steps_per_epoch: int
    total_steps: int
    bar: tqdm
    precision: Precision  # of the training steps (--amp: bfloat16 networks)
    callbacks: Callbacks = field(default_factory=Callbacks)
    state: LoopState = field(default_factory=LoopState)
    metrics: MetricsLog | None = None  # rank 0 only
    record: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics
    saved_at: str | None = None  # where last/ stands, in words: "epoch 3" or "step 250 ..."
    data_range: tuple[float, float] = (0.0, 1.0)  # of the training data; figures map it to [0, 1]
    epoch_started: float = field(default_factory=time.perf_counter)
    # the labels of a conditional model's data (None for the others, whose loss never sees y)
    train_y: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    labelled: LabelledStream | None = None  # a semi-supervised run's labelled images

    @classmethod
    def create(
        cls,
        config: RunConfig,
        run_dir: Path,
        group: Distributed,
        model: Autoencoder,
        data: DataSplits,
        precision: Precision,
        *,
        progress: bool,
        callbacks: Callbacks | None = None,
    ) -> Session:
        train = config.train
        step_module: nn.Module = LossModule(model)
        if group.enabled:
            device_ids = [group.device.index] if group.device.type == "cuda" else None
            step_module = DistributedDataParallel(step_module, device_ids=device_ids)
        batch_order = torch.Generator().manual_seed(train.seed)
        noise_seed = train.seed + 1 + 1_000_003 * group.rank
        train_x, train_y, labelled = _training_data(model, data, config, group.device)
        steps_per_epoch = math.ceil(len(train_x) / train.batch_size)
        total_steps = steps_per_epoch * train.epochs
        bar = tqdm(
            total=total_steps,
            disable=not (progress and group.is_main),
            unit="step",
            dynamic_ncols=True,
        )
        return cls(
            config=config,
            run_dir=run_dir,
            group=group,
            model=model,
            step_module=step_module,
            optimizer=make_optimizer(model, config),
            train_x=train_x,
            val_x=data.val.x.to(group.device) if len(data.val) else None,
            train_y=train_y,
            val_y=(
                data.val.y.to(group.device)
                if model.needs_labels and len(data.val) and data.val.y is not None
                else None
            ),
            labelled=labelled,
            batch_order=batch_order,
            noise=torch.Generator(device=group.device).manual_seed(noise_seed),
            epoch_order=batch_order.get_state(),
            epoch_sums=RunningSums.zeros(group.device),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            bar=bar,
            precision=precision,
            callbacks=callbacks if callbacks is not None else Callbacks(),
            data_range=(float(data.train.x.min()), float(data.train.x.max())),
        )

    @property
    def bar_enabled(self) -> bool:
        return not self.bar.disable

    @property
    def varying_lr(self) -> bool:
        return self.config.optim.schedule != "constant" or self.config.optim.warmup_steps > 0

    def kept_note(self) -> str:
        if self.saved_at is None:
            return "before any checkpoint was saved"
        return f"and the last good checkpoint ({self.saved_at}) is kept"

    def check_finite_weights(self, epoch: int) -> None:
        """Never save NaN weights over a good checkpoint. The weights and the optimiser's
        moments are the same on every rank, so every rank reaches the same verdict. One
        host-device sync.

        The moments matter too: gradients of unscaled data can overflow Adam's squared-gradient
        average to inf, which silently freezes the weights while the loss stays finite."""
        tensors = [p.detach() for p in self.model.parameters()]
        # and floating-point buffers (a VQ-VAE's moving-average codebook)
        tensors += [b for b in self.model.buffers() if b.is_floating_point()]
        tensors += [
            v
            for state in self.optimizer.state.values()
            for v in state.values()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
        ]
        if not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            raise TrainingDiverged(
                f"the weights or optimiser state became NaN or infinite in epoch {epoch} (step "
                f"{self.state.step}); training stopped {self.kept_note()}. Try a lower --lr, "
                "--grad-clip, or data scaled to [0, 1]"
            )

    def end_epoch(self, record: dict[str, Any], loss: float) -> bool:
        """Book a finished epoch: its metrics `record` (appended to metrics.jsonl by rank 0),
        and the `loss` that picks the best checkpoint and counts the patience of early
        stopping. True when that loss improved on the best so far."""
        state = self.state
        improved = loss < state.best_loss
        state.epoch, state.best_loss = record["epoch"], min(loss, state.best_loss)
        state.since_best = 0 if improved else state.since_best + 1
        self.record = record
        if self.metrics is not None:
            self.metrics.append(record)
        return improved

    def save_last(self) -> None:
        """Save `last/` with everything resuming needs. Called on every rank (each contributes
        its noise state and partial sums); only rank 0 writes."""
        mine = {
            "noise": self.noise.get_state(),
            "sums": self.epoch_sums.terms.cpu(),
            "seen": self.epoch_sums.count,
        }
        per_rank = self.group.gather(mine)
        if self.group.is_main:
            self._write(LAST, self._training_state(per_rank))
        self.saved_at = _position(self.state)
        self.group.barrier()

    def save_best(self) -> None:
        """Save the weights as `best/` (rank 0 writes; the others have the same weights)."""
        if self.group.is_main:
            self._write(BEST)

    def _write(self, which: str, training_state: TrainingState | None = None) -> None:
        path = self.run_dir / which
        save_checkpoint(path, self.model, self.config, self._meta(), training_state)
        self.callbacks.on_checkpoint(which, path)

    def _meta(self) -> dict[str, Any]:
        state = self.state
        return {
            "vaelab_version": __version__,
            "epoch": state.epoch,
            "step": state.step,
            "batch": state.batch,
            "metrics": self.record,
            "data_range": self.data_range,
            "precision": self.precision.name,
        }

    def _training_state(self, per_rank: list[dict[str, Any]]) -> TrainingState:
        """What last/ holds beyond the weights. Per rank: its noise state, and its partial sums
        as `sums.rankN` tensors with their counts in the `seen` list."""
        order = self.epoch_order if self.state.batch else self.batch_order.get_state()
        tensors = {"batch_order": order, "torch": torch.get_rng_state()}
        for rank, item in enumerate(per_rank):
            tensors[f"noise.rank{rank}"] = item["noise"]
            tensors[f"sums.rank{rank}"] = item["sums"]
        values = {
            "loop": asdict(self.state),
            "seen": [item["seen"] for item in per_rank],
            "world_size": self.group.world_size,
        }
        return TrainingState(self.optimizer.state_dict(), tensors, values)

    def restore(self) -> None:
        """Load the weights, optimiser, RNG states and loop position saved in `last/`."""
        checkpoint = resolve_checkpoint(self.run_dir, prefer=LAST)
        saved_model, saved_config, saved_meta = load_checkpoint(
            checkpoint, device=self.group.device, with_prior=False
        )
        check_resumable(saved_config, self.config)
        self.model.load_state_dict(saved_model.state_dict())
        saved = load_training_state(checkpoint)
        self._restore_loop(saved, checkpoint)
        if self.state.batch and saved_config.train.batch_size != self.config.train.batch_size:
            raise VaelabError(
                f"{checkpoint} was saved mid-epoch with batch size "
                f"{saved_config.train.batch_size}; resume it with the same --batch-size (it may "
                "change at an epoch's end)"
            )
        self._restore_rank(saved, checkpoint)
        self.record = saved_meta.get("metrics", {})
        self.saved_at = _position(self.state)
        self.bar.update(self.state.step)
        logger.info(
            "resuming %s after epoch %d, step %d", self.run_dir, self.state.epoch, self.state.step
        )

    def _restore_loop(self, saved: TrainingState, checkpoint: Path) -> None:
        """The state every rank shares: optimiser, batch order, torch's RNG, loop position."""
        try:
            self.optimizer.load_state_dict(saved.optimizer)
            self.epoch_order = saved.tensors["batch_order"]
            self.batch_order.set_state(self.epoch_order)
            torch.set_rng_state(saved.tensors["torch"])
            self.state = LoopState(**saved.values["loop"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise VaelabError(
                f"the training state in {checkpoint} is corrupt ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else 'missing entry'})"
            ) from None

    def _restore_rank(self, saved: TrainingState, checkpoint: Path) -> None:
        """This rank's own state: its noise generator and the partial sums of its epoch."""
        rank, world_size = self.group.rank, self.group.world_size
        noise_key = f"noise.rank{rank}"
        if saved.values.get("world_size") == world_size and noise_key in saved.tensors:
            self.noise.set_state(saved.tensors[noise_key])
            sums = saved.tensors[f"sums.rank{rank}"].to(self.group.device)
            self.epoch_sums = RunningSums(sums, int(saved.values["seen"][rank]))
        elif self.state.batch:
            raise VaelabError(
                f"{checkpoint} was saved mid-epoch by {saved.values.get('world_size')} "
                "processes; resume it with the same number of processes"
            )
        else:
            logger.warning(
                "resuming with a different number of processes: training goes on, "
                "but not bit for bit as the original run would have"
            )

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()


def _training_data(
    model: Autoencoder, data: DataSplits, config: RunConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, LabelledStream | None]:
    """The images the epochs pass over, their labels (for a conditional model), and, for a
    semi-supervised run (some labels hidden), the labelled images as a stream of their own:
    the epochs then pass over the unlabelled images only."""
    x, y = data.train.x, data.train.y
    if not model.needs_labels or y is None:
        return x.to(device), None, None
    known = y >= 0
    if bool(known.all()) or not bool(known.any()):
        return x.to(device), y.to(device), None
    batch_size = min(config.train.batch_size, int(known.sum()))
    stream = LabelledStream(x[known].to(device), y[known].to(device), batch_size, config.train.seed)
    return x[~known].to(device), y[~known].to(device), stream


def _position(state: LoopState) -> str:
    if state.batch == 0:
        return f"epoch {state.epoch}"
    return f"step {state.step}, batch {state.batch} of epoch {state.epoch + 1}"


def check_resumable(saved: RunConfig, requested: RunConfig) -> None:
    """Raise unless `requested` may continue a run saved with `saved`: only training-loop
    options ([train]) and where the data lives may change. The error names what differs."""
    # Where the data lives and whether it may be downloaded can change; what it is cannot.
    for name in ("objective", "k"):  # the loss, and so the best checkpoint, would change meaning
        before, after = getattr(saved.model, name), getattr(requested.model, name)
        if before != after:
            raise VaelabError(
                f"cannot resume with --{name} {after}: the run was trained with --{name} {before}"
            )
    movable = {"data_dir": None, "download": True, "binarize": False}
    saved = replace(saved, data=replace(saved.data, **movable))
    requested = replace(requested, data=replace(requested.data, **movable))
    for section in ("model", "data", "optim"):
        before, after = getattr(saved, section), getattr(requested, section)
        changed = [
            f"{f.name} {getattr(before, f.name)!r} -> {getattr(after, f.name)!r}"
            for f in fields(before)
            if getattr(before, f.name) != getattr(after, f.name)
        ]
        if changed:
            raise VaelabError(
                f"cannot resume with different [{section}] options than the run was started "
                f"with ({'; '.join(changed)}); only training-loop options (e.g. --epochs) may "
                "change"
            )
