"""The training loop: `train(config, run_dir)` — read it top to bottom.

Batches are index slices of one in-memory tensor on the training device; all randomness flows
from two seeded generators (batch order on the CPU, model noise on the device), whose states are
saved with every `last` checkpoint, so `resume=True` continues bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab._version import __version__
from vaelab.data import iterate_batches, load_data
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder, build_model
from vaelab.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from vaelab.training.config import RunConfig, with_data_shape
from vaelab.training.evaluation import evaluate_loss
from vaelab.training.metrics import MetricsLog
from vaelab.training.runs import (
    BEST,
    LAST,
    check_run_folder,
    prepare_run_folder,
    resolve_device,
)
from vaelab.training.schedules import kl_scale, learning_rate

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5  # how often the loop syncs with the device to show progress


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int  # epochs completed in total
    best_loss: float  # best validation loss (training loss where there is no validation split)
    metrics: dict[str, Any]  # the last epoch's record
    stopped_early: bool


def _make_optimizer(model: Autoencoder, config: RunConfig) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel: one pass over the parameters instead of a dozen, which
    makes a step of the classic MNIST MLP about 20% faster on a CPU at batch 128."""
    optim = config.optim
    kind = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=True)


def _check_resumable(saved: RunConfig, requested: RunConfig) -> None:
    for section in ("model", "data", "optim"):
        if getattr(saved, section) != getattr(requested, section):
            raise VaelabError(
                f"cannot resume with different [{section}] options than the run was started with; "
                "only training-loop options (e.g. --epochs) may change"
            )


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train `config` into `run_dir`; with `resume`, continue the run saved there."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir, resume=resume, force=force)  # fail early, but change nothing yet
    device = resolve_device(config.train.device)
    if config.train.amp and device.type != "cuda":
        raise VaelabError("--amp (mixed precision) needs a CUDA device")

    data = load_data(config.data, progress=progress)
    config = with_data_shape(config, data.shape)
    torch.manual_seed(config.train.seed)  # weight initialisation
    model = build_model(config.model).to(device)
    model.check_data(data.train.x, where=f"training data of {data.name}")
    if len(data.val):  # the validation loss picks the best checkpoint: it must be finite too
        model.check_data(data.val.x, where=f"validation data of {data.name}")
    prepare_run_folder(run_dir, resume=resume, force=force)  # --force clears an old run only now
    optimizer = _make_optimizer(model, config)
    batch_order = torch.Generator().manual_seed(config.train.seed)
    noise = torch.Generator(device=device).manual_seed(config.train.seed + 1)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_loss": math.inf, "since_best": 0}
    record: dict[str, Any] = {}  # the last epoch's metrics

    if resume:
        checkpoint = resolve_checkpoint(run_dir, prefer=LAST)
        saved_model, saved_config, saved_meta = load_checkpoint(checkpoint, device=device)
        _check_resumable(saved_config, config)
        model.load_state_dict(saved_model.state_dict())
        saved = load_training_state(checkpoint)
        optimizer.load_state_dict(saved.optimizer)
        batch_order.set_state(saved.tensors["batch_order"])
        noise.set_state(saved.tensors["noise"])
        torch.set_rng_state(saved.tensors["torch"])
        state.update(saved.values["loop"])
        record = saved_meta.get("metrics", {})  # the result, should no epochs remain
        logger.info("resuming %s after epoch %d", run_dir, state["epoch"])
    config.save(run_dir / "config.json")

    metrics_log = MetricsLog(run_dir, tensorboard=config.train.tensorboard)
    metrics_log.keep_until(state["epoch"])
    train_x = data.train.x.to(device)
    val_x = data.val.x.to(device) if len(data.val) else None
    steps_per_epoch = math.ceil(len(train_x) / config.train.batch_size)
    total_steps = steps_per_epoch * config.train.epochs
    stopped_early = False
    bar = tqdm(total=total_steps, initial=state["step"], disable=not progress, unit="step",
               dynamic_ncols=True)  # fmt: skip
    try:
        for epoch in range(state["epoch"] + 1, config.train.epochs + 1):
            started = time.perf_counter()
            train_terms = _train_epoch(
                model, optimizer, train_x, config, state, epoch,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                batch_order=batch_order, noise=noise, bar=bar,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            # A finite loss can still come with a NaN update (a NaN gradient in the last step):
            # never save such weights over the last good checkpoint.
            _check_finite_weights(model, state, epoch)
            record = {"epoch": epoch, "step": state["step"]}
            record |= {f"train/{k}": v for k, v in train_terms.items()}
            if val_x is not None:
                val_terms = evaluate_loss(
                    model, val_x, batch_size=config.train.batch_size,
                    binarize=config.train.binarize, seed=config.train.seed,
                )  # fmt: skip
                record |= {f"val/{k}": v for k, v in val_terms.items()}
            record |= {
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": seconds,
                "samples_per_second": len(train_x) / seconds,
            }
            watched = record.get("val/loss", record["train/loss"])
            improved = watched < state["best_loss"]
            state.update(epoch=epoch, best_loss=min(watched, state["best_loss"]))
            state["since_best"] = 0 if improved else state["since_best"] + 1
            metrics_log.append(record)
            meta = {"vaelab_version": __version__, "epoch": epoch, "step": state["step"],
                    "metrics": record}  # fmt: skip
            training_state = TrainingState(
                optimizer=optimizer.state_dict(),
                tensors={"batch_order": batch_order.get_state(), "noise": noise.get_state(),
                         "torch": torch.get_rng_state()},
                values={"loop": dict(state)},
            )  # fmt: skip
            save_checkpoint(run_dir / LAST, model, config, meta, training_state)
            if improved:
                save_checkpoint(run_dir / BEST, model, config, meta)
            logger.info(_epoch_summary(record, config.train.epochs))
            patience = config.train.early_stopping
            if patience is not None and state["since_best"] >= patience:
                logger.info("early stopping: no better validation loss for %d epochs", patience)
                stopped_early = True
                break
    finally:
        bar.close()
        metrics_log.close()
    return TrainResult(run_dir, state["epoch"], state["best_loss"], record, stopped_early)


def _train_epoch(
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    train_x: torch.Tensor,
    config: RunConfig,
    state: dict[str, Any],
    epoch: int,
    *,
    steps_per_epoch: int,
    total_steps: int,
    batch_order: torch.Generator,
    noise: torch.Generator,
    bar: tqdm,
) -> dict[str, float]:
    """One pass over the training data; returns the epoch's mean loss terms (nats per example)."""
    model.train()
    cfg = config.train
    sums = torch.zeros(3, device=train_x.device)  # (total, recon, kl) * batch size, on device
    seen = 0
    bar.set_description(f"epoch {epoch}/{cfg.epochs}")
    last_sync, steps_since_sync = time.perf_counter(), 0
    amp = torch.autocast(train_x.device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    for x in iterate_batches(train_x, cfg.batch_size, shuffle=True, generator=batch_order):
        if cfg.binarize:  # dynamic binarisation: a fresh binary image each time x is drawn
            x = torch.bernoulli(x, generator=noise)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["step"], total_steps, config.optim)
        with amp:
            terms = model.loss(
                x, kl_scale=kl_scale(state["step"], steps_per_epoch, cfg.kl_warmup_epochs),
                generator=noise,
            )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        sums += torch.stack([terms.total, terms.recon, terms.kl]).detach().float() * len(x)
        seen += len(x)
        state["step"] += 1
        steps_since_sync += 1
        now = time.perf_counter()
        if now - last_sync >= PROGRESS_SECONDS:  # the only host-device syncs in the loop
            means = _check_finite(sums / seen, state, epoch)
            speed = steps_since_sync * cfg.batch_size / (now - last_sync)
            bar.set_postfix(loss=f"{means[0]:.2f}", recon=f"{means[1]:.2f}", kl=f"{means[2]:.2f}",
                            samples_s=f"{speed:.0f}")  # fmt: skip
            bar.update(steps_since_sync)
            last_sync, steps_since_sync = now, 0
    bar.update(steps_since_sync)
    total, recon, kl = _check_finite(sums / seen, state, epoch)
    return {"loss": total, "recon": recon, "kl": kl}


def _check_finite(means: torch.Tensor, state: dict[str, Any], epoch: int) -> list[float]:
    values = means.tolist()
    if not all(math.isfinite(v) for v in values):
        raise TrainingDiverged(
            f"loss became {values[0]} in epoch {epoch} (step {state['step']}); training stopped "
            f"{_kept(state)}. Try a lower --lr or --grad-clip"
        )
    return values


def _check_finite_weights(model: Autoencoder, state: dict[str, Any], epoch: int) -> None:
    finite = torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()
    if not bool(finite):  # one host-device sync per epoch
        raise TrainingDiverged(
            f"the weights became NaN or infinite in epoch {epoch} (step {state['step']}); "
            f"training stopped {_kept(state)}. Try a lower --lr or --grad-clip"
        )


def _kept(state: dict[str, Any]) -> str:
    if state["epoch"] == 0:
        return "before the first epoch ended, so no checkpoint was saved"
    return f"and the last good checkpoint (epoch {state['epoch']}) is kept"


def _epoch_summary(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key in ("train/loss", "train/recon", "train/kl", "val/loss"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    parts.append(f"{record['samples_per_second']:.0f} samples/s")
    return "  ".join(parts)
