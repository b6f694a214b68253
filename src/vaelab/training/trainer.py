"""The training loop: `train(config, run_dir)` — read it top to bottom.

Batches are index slices of one in-memory tensor on the training device. All randomness flows
from seeded generators (batch order on the CPU, model noise on the device) whose states are saved
in every `last` checkpoint, together with the position inside the epoch, so `resume=True`
continues bit for bit, from an epoch's end or from the middle of one (Ctrl-C, --checkpoint-every).
Under torchrun each process trains on its share of every global batch, and
DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.data import DataSplits, batch_indices, draw_binary, load_data
from vaelab.errors import VaelabError, plural
from vaelab.files import atomic_write_text
from vaelab.models import Autoencoder, LossTerms, build_model
from vaelab.training.averages import LossMeans, RunningSums
from vaelab.training.callbacks import Callbacks
from vaelab.training.config import RunConfig, with_absolute_paths, with_data_facts
from vaelab.training.distributed import Distributed, distributed, shard
from vaelab.training.evaluation import evaluate_loss
from vaelab.training.interrupts import graceful_interrupt
from vaelab.training.metrics import MetricsLog, check_tensorboard
from vaelab.training.precision import FP32, Precision, choose_precision
from vaelab.training.runs import check_run_folder, prepare_run_folder
from vaelab.training.schedules import kl_scale, learning_rate
from vaelab.training.session import Session, TrainingDiverged
from vaelab.training.threads import cpu_threads

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5  # how often a single process syncs with the device to show progress
INTERRUPT_CHECK_STEPS = 10  # under torchrun, how often the ranks agree on a Ctrl-C
MEASURE_EXAMPLES = 10_000  # images the model's own measures see at each epoch's end
LABELLED_JSON = "labelled.json"  # a semi-supervised run's labelled images

__all__ = ["Callbacks", "TrainResult", "TrainingDiverged", "train"]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int  # epochs completed in total
    best_loss: float  # best validation loss (training loss where there is no validation split)
    metrics: dict[str, Any]  # the last epoch's record
    stopped_early: bool
    model: Autoencoder  # the final weights (not necessarily the best), in eval mode


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    data: DataSplits | None = None,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train `config` into `run_dir`; with `resume`, continue the run saved there.

    `data` trains on splits already in memory instead of loading `config.data` (which is still
    saved with the run: pass the same data again to resume). `callbacks` observe the loop.
    """
    run_dir = Path(run_dir)
    config = with_absolute_paths(config)
    check_run_folder(run_dir, resume=resume, force=force)  # fail early, but change nothing yet
    with cpu_threads(config.train.threads), distributed(config.train.device) as group:
        session = _start(
            config,
            run_dir,
            group,
            resume=resume,
            force=force,
            progress=progress,
            data=data,
            callbacks=callbacks,
        )
        try:
            with graceful_interrupt() as interrupted:  # only now: Ctrl-C in loading stops at once
                stopped_early = _run_epochs(session, interrupted)
                if interrupted.is_set():  # pressed while the last epoch was being saved
                    raise KeyboardInterrupt(
                        f"the run had finished; continue it with: vaelab "
                        f"train --resume {run_dir} --epochs N"
                    )
        finally:
            session.close()
    state = session.state
    model = session.model.eval()
    return TrainResult(run_dir, state.epoch, state.best_loss, session.record, stopped_early, model)


def _run_epochs(session: Session, interrupted: threading.Event) -> bool:
    """Train the remaining epochs; True when early stopping ended the run."""
    for epoch in range(session.state.epoch + 1, session.config.train.epochs + 1):
        sums = _train_epoch(session, epoch, interrupted)
        _finish_epoch(session, epoch, sums)
        patience = session.config.train.early_stopping
        if patience is not None and session.state.since_best >= patience:
            logger.info(
                "early stopping: no better validation loss for %s", plural(patience, "epoch")
            )
            return True
    return False


def _start(
    config: RunConfig,
    run_dir: Path,
    group: Distributed,
    *,
    resume: bool,
    force: bool,
    progress: bool,
    data: DataSplits | None,
    callbacks: Callbacks | None,
) -> Session:
    """Load the data, build the model and optimiser, and restore a resumed run's state."""
    if data is None:
        data = _load_data(config, group, progress=progress)
    config = with_data_facts(config, data)
    torch.manual_seed(config.train.seed)  # weight initialisation, the same on every rank
    model = build_model(config.model).to(group.device)
    model.check_data(data.train.x, where=f"training data of {data.name}")
    if len(data.val):  # the validation loss picks the best checkpoint: it must be finite too
        model.check_data(data.val.x, where=f"validation data of {data.name}")
    _check_data_scale(data, config)
    if config.train.tensorboard:
        check_tensorboard()  # before --force clears anything
    if group.is_main:
        prepare_run_folder(run_dir, resume=resume, force=force)  # --force clears only now
    group.barrier()
    precision = _agreed_precision(config.train.amp, group)
    session = Session.create(
        config, run_dir, group, model, data, precision, progress=progress, callbacks=callbacks
    )
    if resume:
        session.restore()
    if group.is_main:
        config.save(run_dir / "config.json")
        save_labelled(run_dir, data, config)
        session.metrics = MetricsLog(run_dir, tensorboard=config.train.tensorboard)
        session.metrics.keep_until(session.state.epoch)
    return session


def save_labelled(run_dir: Path, data: DataSplits, config: RunConfig) -> None:
    """A semi-supervised run's labelled images, as positions in its training split with their
    labels, in `labelled.json` (they follow from the data config, but are kept for the record)."""
    y = data.train.y
    if config.data.labelled is None or y is None:
        return
    known = (y >= 0).nonzero().flatten()
    record = {
        "labelled": len(known),
        "split_seed": config.data.seed,
        "train_positions": known.tolist(),
        "labels": y[known].tolist(),
    }
    atomic_write_text(run_dir / LABELLED_JSON, json.dumps(record) + "\n")


def _agreed_precision(amp: bool, group: Distributed) -> Precision:
    """The precision of the training steps: bf16 with `amp` where every rank has native
    bfloat16, so that all ranks train alike; rank 0 says so where one has not."""
    chosen = choose_precision(amp, group.device, warn=False)
    if not group.any(amp and not chosen.reduced):
        return chosen
    if group.is_main and chosen.reduced:
        logger.warning("--amp: another process of this run has no native bfloat16; running in fp32")
    elif group.is_main:
        choose_precision(amp, group.device)  # says why, in one line
    return Precision(FP32, group.device.type)


def _load_data(config: RunConfig, group: Distributed, *, progress: bool) -> DataSplits:
    if not group.is_main:
        group.barrier()  # rank 0 downloads the data first, if it must
    data = load_data(config.data, progress=progress and group.is_main)
    if group.is_main:
        group.barrier()
    return data


def _check_data_scale(data: DataSplits, config: RunConfig) -> None:
    low, high = float(data.train.x.min()), float(data.train.x.max())
    if config.data.binarize and (low < 0 or high > 1):
        raise VaelabError(
            f"--binarize draws Bernoulli(x) pixels, so it needs data in [0, 1]; {data.name} "
            f"spans [{low:g}, {high:g}]"
        )
    if low >= 0 and high > 2:  # e.g. 8-bit pixel values stored as floats
        logger.warning(
            "%s spans [%g, %g]: scaled to [0, 1] it trains far better (8-bit pixel "
            "values: divide by 255)",
            data.name,
            low,
            high,
        )


def _train_epoch(session: Session, epoch: int, interrupted: threading.Event) -> RunningSums:
    """One pass over the training data. Returns this process's loss sums over its examples;
    a resumed epoch goes on from the sums saved in the middle of it."""
    cfg, state, group = session.config.train, session.state, session.group
    session.model.train()
    session.epoch_started = time.perf_counter()
    if state.batch == 0:  # a fresh epoch: remember the state its permutation is drawn from
        session.epoch_order = session.batch_order.get_state()
    else:  # resumed mid-epoch: draw that epoch's permutation again, then skip the done batches
        session.batch_order.set_state(session.epoch_order)
    sums = session.epoch_sums  # saved with last/, so kept on the session
    session.bar.set_description(f"epoch {epoch}/{cfg.epochs}")
    last_sync, steps_since_sync = time.perf_counter(), 0
    indices = batch_indices(
        len(session.train_x),
        cfg.batch_size,
        shuffle=True,
        generator=session.batch_order,
        start_batch=state.batch,
        device=group.device,
    )
    for idx in indices:
        x, y, weight = local_batch(session, idx)
        session.callbacks.on_batch(x if weight > 0 else x[:0], step=state.step)
        terms = _step(session, x, y, weight)
        if terms is not None and weight > 0:
            sums.add(terms, len(x))
        state.step += 1
        state.batch += 1
        steps_since_sync += 1
        now = time.perf_counter()
        if now - last_sync >= PROGRESS_SECONDS and session.bar_enabled:
            _show_progress(session, sums, steps_since_sync, now - last_sync, epoch)
            last_sync, steps_since_sync = now, 0
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            _save_mid_epoch(session, epoch)
        if _interrupt_requested(session, interrupted):
            _save_mid_epoch(session, epoch)
            raise KeyboardInterrupt(
                f"saved last/ at epoch {epoch}, step {state.step}; "
                f"continue with: vaelab train --resume {session.run_dir}"
            )
    session.bar.update(steps_since_sync)
    state.batch, session.epoch_sums = 0, RunningSums.zeros(group.device)
    return sums


def _save_mid_epoch(session: Session, epoch: int) -> None:
    """Save `last/` at the current step, after checking that nothing has turned NaN."""
    if session.group.any(not session.epoch_sums.is_finite()):  # on any rank: all stop together
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {epoch} (step {session.state.step}); "
            f"training stopped {session.kept_note()}. Try a lower --lr, --grad-clip or "
            "--on-nan skip"
        )
    session.check_finite_weights(epoch)
    session.save_last()


def local_batch(
    session: Session, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """This process's examples of a global batch, their labels (a conditional model's; else
    None), and the weight that makes the average of the ranks' gradients equal the gradient of
    the global batch mean."""
    group, labels = session.group, session.train_y
    if group.enabled:
        local = shard(idx, group.rank, group.world_size)
        if len(local) == 0:  # a last batch smaller than the world: join the all-reduce with zeros
            local, weight = idx[:1], 0.0
        else:
            weight = len(local) * group.world_size / len(idx)
    else:
        local, weight = idx, 1.0
    y = None if labels is None else labels.index_select(0, local)
    return session.train_x.index_select(0, local), y, weight


def with_labelled_batch(
    session: Session, x: torch.Tensor, y: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A semi-supervised run's step sees a batch of labelled images beside the unlabelled
    ones (this process's share of it, under torchrun); other runs' batches pass unchanged."""
    stream, group = session.labelled, session.group
    if stream is None or y is None:
        return x, y
    idx = stream.indices(session.state.step)
    if group.enabled:
        idx = shard(idx, group.rank, group.world_size)
    return torch.cat([x, stream.x[idx]]), torch.cat([y, stream.y[idx]])


def _step(
    session: Session, x: torch.Tensor, y: torch.Tensor | None, weight: float
) -> LossTerms | None:
    """One optimisation step on x (with labels y for a conditional model); None when
    `on_nan=skip` dropped a non-finite batch."""
    cfg, optim, state = session.config.train, session.config.optim, session.state
    x, y = with_labelled_batch(session, x, y)
    if session.config.data.binarize:  # dynamic binarisation: a fresh binary image per draw
        x = draw_binary(x, generator=session.noise)
    if session.varying_lr:
        for group in session.optimizer.param_groups:
            if not group.get("fixed_lr", False):
                group["lr"] = learning_rate(state.step, session.total_steps, optim)
    scale = kl_scale(state.step, session.steps_per_epoch, cfg.kl_warmup_epochs)
    with session.precision.autocast():
        terms = session.step_module(x, y=y, kl_scale=scale, generator=session.noise)
    loss = terms.objective if weight == 1.0 else terms.objective * weight
    session.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if optim.grad_clip is not None:  # per group: FactorVAE's discriminator clips on its own
        for group in session.optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], optim.grad_clip)
    if cfg.on_nan == "skip" and not _finite_step(session, terms):
        state.skipped += 1
        return None
    session.optimizer.step()
    return terms


def _finite_step(session: Session, terms: LossTerms) -> bool:
    """Whether the gradients (identical on every rank after DDP's all-reduce) and, in a
    single process, the loss are finite. One host-device sync."""
    checks = [p.grad.isfinite().all() for p in session.model.parameters() if p.grad is not None]
    if not session.group.enabled:
        checks.append(terms.objective.isfinite())
    return bool(torch.stack(checks).all())


def _interrupt_requested(session: Session, interrupted: threading.Event) -> bool:
    if not session.group.enabled:
        return interrupted.is_set()
    if session.state.step % INTERRUPT_CHECK_STEPS:
        return False
    return session.group.any(interrupted.is_set())  # every rank stops at the same step


def _show_progress(
    session: Session, sums: RunningSums, steps: int, seconds: float, epoch: int
) -> None:
    means = sums.means()
    if not session.group.enabled:  # under torchrun, ranks only stop together, at epoch ends
        _check_finite(means, session, epoch)
    speed = steps * session.config.train.batch_size / seconds
    terms = {"loss": f"{means.total:.2f}", "recon": f"{means.recon:.2f}"}
    if session.model.has_prior:  # without a prior there is no KL term, only a 0 in the record
        terms["kl"] = f"{means.kl:.2f}"
    session.bar.set_postfix(**terms, samples_s=f"{speed:.0f}")
    session.bar.update(steps)


# --- the end of an epoch: reduce over the ranks, validate, record, save -------------------------


def _finish_epoch(session: Session, epoch: int, sums: RunningSums) -> None:
    """Reduce the epoch's loss over the ranks, validate, log, and save the checkpoints."""
    seconds = time.perf_counter() - session.epoch_started
    totals = sums.reduced(session.group)  # over every rank's examples
    train_means = _check_finite(totals.means(), session, epoch)
    session.check_finite_weights(epoch)  # a finite loss can still come with a NaN update
    val_means = _validate(session, epoch)
    record = _epoch_record(session, epoch, train_means, val_means, seconds, totals.count)
    watched = val_means if val_means is not None else train_means  # picks best/ and patience
    improved = session.end_epoch(record, watched.total)
    if improved:  # best/ first: a crash between the two saves then repeats this epoch on
        session.save_best()  # resume and saves best/ again; the other way round it is lost
    session.save_last()
    if session.group.is_main:
        summary = _epoch_summary(record, session.config.train.epochs, session.model.has_prior)
        logger.info(summary)
    session.callbacks.on_epoch_end(record)


def _validate(session: Session, epoch: int) -> LossMeans | None:
    """The loss terms over the whole validation split (None without one): each rank scores its
    shard, then the sums are added up."""
    if session.val_x is None:
        return None
    group, cfg = session.group, session.config.train
    val_x, val_y = session.val_x, _validation_labels(session)
    if group.enabled:
        val_x = shard(val_x, group.rank, group.world_size)
        val_y = None if val_y is None else shard(val_y, group.rank, group.world_size)
    sums = RunningSums.zeros(group.device)
    if len(val_x):
        means = evaluate_loss(
            session.model,
            val_x,
            y=val_y,
            batch_size=cfg.batch_size,
            binarize=session.config.data.binarize,
            seed=cfg.seed,
        )
        sums.add_means(means, len(val_x))
    return _check_finite(sums.reduced(group).means(), session, epoch, what="validation loss")


def _validation_labels(session: Session) -> torch.Tensor | None:
    """The labels the validation loss sees: a conditional model's, but not a semi-supervised
    run's, whose validation loss is the bound on log p(x) with y marginalised, as for its
    unlabelled images (its validation labels give the accuracy, in the model's measures)."""
    return None if session.labelled is not None else session.val_y


def _epoch_record(
    session: Session,
    epoch: int,
    train: LossMeans,
    val: LossMeans | None,
    seconds: float,
    examples: int,
) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl (its keys stay: older runs and the plots read them)."""
    record: dict[str, Any] = {"epoch": epoch, "step": session.state.step, **train.record("train")}
    if val is not None:
        record |= val.record("val")
    record |= {
        "lr": session.optimizer.param_groups[0]["lr"],
        "epoch_seconds": seconds,
        "samples_per_second": examples / seconds,  # of the training data, over all ranks
        "precision": session.precision.name,  # of the training steps; validation is fp32
    }
    if session.config.train.on_nan == "skip":
        record["skipped_steps"] = session.state.skipped
    return record | _model_measures(session)


def _model_measures(session: Session) -> dict[str, float]:
    """The model's own measures (a VQ-VAE's codebook usage and perplexity), on the validation
    split, else on the first MEASURE_EXAMPLES training images."""
    if session.val_x is not None:
        split, x, y = "val", session.val_x, session.val_y
    else:
        split, x, y = "train", session.train_x, session.train_y
    x = x[:MEASURE_EXAMPLES]
    y = None if y is None else y[:MEASURE_EXAMPLES]
    if session.config.data.binarize:  # the images as training sees them: one fixed draw
        x = draw_binary(
            x, generator=torch.Generator(x.device).manual_seed(session.config.train.seed)
        )
    measures = session.model.measures(x) if y is None else session.model.measures(x, y)
    return {f"{split}/{name}": value for name, value in measures.items()}


def _check_finite(
    means: LossMeans, session: Session, epoch: int, *, what: str = "loss"
) -> LossMeans:
    if not means.is_finite():
        raise TrainingDiverged(
            f"{what} became {means.total} in epoch {epoch} (step {session.state.step}); training "
            f"stopped {session.kept_note()}. Try a lower --lr, --grad-clip or --on-nan skip"
        )
    return means


def _epoch_summary(record: dict[str, Any], epochs: int, has_prior: bool) -> str:
    """The epoch's log line; the KL only for a model with a prior (metrics.jsonl keeps its
    key, always 0 otherwise, so that every run's records read alike)."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key in ("train/loss", "train/recon", "train/kl", "val/loss"):
        if key in record and (has_prior or key != "train/kl"):
            parts.append(f"{key} {record[key]:.3f}")
    parts.append(f"{record['samples_per_second']:.0f} samples/s")
    return "  ".join(parts)
