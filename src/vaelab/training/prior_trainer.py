"""The second stage of a VQ-VAE: fit a gated PixelCNN to the codes of its training images.

`train_prior(run_dir)` encodes the run's training (and validation) images once with the run's
checkpoint, then fits the prior by maximum likelihood on those index grids, into `RUN/prior/`
(see code_prior.py). `last/` holds the optimiser, the batch order and the loop position, so
`resume=True` continues bit for bit, also from the middle of an epoch (Ctrl-C saves there).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vaelab.bundles import is_bundle
from vaelab.data import batch_indices, draw_binary
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_text
from vaelab.models import Autoencoder
from vaelab.models.pixelcnn import PixelCNNConfig, PixelCNNPrior
from vaelab.training.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainingState,
    load_training_state,
    read_tensors,
    resolve_checkpoint,
    save_checkpoint,
)
from vaelab.training.code_prior import (
    PRIOR_FOLDER,
    PriorConfig,
    PriorTraining,
    clear_prior,
    prior_folder,
    saved_config,
    settle_config,
)
from vaelab.training.interrupts import graceful_interrupt
from vaelab.training.metrics import MetricsLog
from vaelab.training.precision import Precision, choose_precision
from vaelab.training.runs import BEST, LAST
from vaelab.training.threads import cpu_threads
from vaelab.version import __version__

logger = logging.getLogger(__name__)

ENCODE_BATCH = 1024


@dataclass(frozen=True)
class PriorResult:
    folder: Path
    epochs: int
    best_nll: float  # nats per code grid, on the validation codes (else the training codes)
    prior: PixelCNNPrior


# --- training --------------------------------------------------------------------------------


@dataclass
class PriorLoop:
    """The loop's position, saved as JSON in last/; the sums make a resumed epoch's mean exact."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    best_nll: float = math.inf
    nll_sum: float = 0.0  # of the unfinished epoch, over its examples
    seen: int = 0


def encode_codes(model: Autoencoder, x: Tensor, *, binarize: bool, seed: int) -> Tensor:
    """The index grids (N, h, w) of images x under the VQ-VAE `model`; with `binarize`, of one
    fixed Bernoulli draw of them (seeded), as the run's training saw binary images."""
    generator = torch.Generator().manual_seed(seed)
    parts = []
    with torch.no_grad():
        for batch in x.split(ENCODE_BATCH):
            if binarize:
                batch = draw_binary(batch, generator=generator)
            parts.append(model.code_indices(batch.to(model.device, model.dtype)).cpu())
    return torch.cat(parts)


@dataclass
class PriorFit:
    """One fit of a prior between steps: what `_fit_epochs` reads and updates."""

    folder: Path
    run_dir: Path
    config: PriorConfig
    prior: PixelCNNPrior
    optimizer: torch.optim.Optimizer
    train_codes: Tensor  # (N, h, w) on the prior's device
    held_codes: Tensor  # the validation codes, else the training codes: they pick best/
    order: torch.Generator  # the batch order, on the CPU
    epoch_order: Tensor  # order's state when the unfinished epoch began
    loop: PriorLoop
    precision: Precision  # of the PixelCNN's steps (--amp: bfloat16)


def train_prior(
    run_dir: str | Path,
    network: PixelCNNConfig | None = None,
    training: PriorTraining | None = None,
    *,
    epochs: int | None = None,
    resume: bool = False,
    force: bool = False,
    checkpoint: str = BEST,
    device: str = "auto",
    data_dir: str | None = None,
    threads: int | None = None,
    amp: bool = False,
    progress: bool = True,
) -> PriorResult:
    """Fit (or with `resume`, go on fitting) the prior of the VQ-VAE run `run_dir`.

    `network` defaults to a PixelCNN sized for the run's codes. On resume the saved settings
    are used; `epochs` (or `training.epochs`) sets the new total, and nothing else may differ.
    `threads` sets torch's CPU threads for the fit (None: leave them). `amp` runs the
    PixelCNN in bfloat16 where the device has it natively (its loss and weights stay fp32); like
    `threads`, it is an option of this invocation, which a resumed fit may change.
    """
    with cpu_threads(threads):
        fit = _start(
            Path(run_dir),
            network,
            training,
            epochs=epochs,
            resume=resume,
            force=force,
            checkpoint=checkpoint,
            device=device,
            data_dir=data_dir,
            amp=amp,
        )
        metrics = MetricsLog(fit.folder)
        metrics.keep_until(fit.loop.epoch)
        try:
            with graceful_interrupt() as interrupted:
                _fit_epochs(fit, metrics, interrupted, progress=progress)
        finally:
            metrics.close()
    return PriorResult(fit.folder, fit.loop.epoch, fit.loop.best_nll, fit.prior.eval())


def _start(
    run_dir: Path,
    network: PixelCNNConfig | None,
    training: PriorTraining | None,
    *,
    epochs: int | None,
    resume: bool,
    force: bool,
    checkpoint: str,
    device: str,
    data_dir: str | None,
    amp: bool = False,
) -> PriorFit:
    """Check everything, encode the codes, build the prior; only then clear (`force`) or
    restore (`resume`) the prior folder."""
    from vaelab.runs import check_run, open_run, run_folder  # runs imports this package

    check_run(run_dir)
    if is_bundle(run_dir):
        raise VaelabError(
            f"{run_dir} is a bundle, which vaelab never writes into: fit the prior in the run "
            "folder, then pack it again"
        )
    if run_dir.name == PRIOR_FOLDER and (run_dir / CONFIG_FILE).is_file():
        raise VaelabError(f"{run_dir} is a prior's folder: pass its run, {run_dir.parent}")
    if resume and force:
        raise VaelabError("--resume continues the saved prior and --force replaces it: pick one")
    folder = prior_folder(run_folder(run_dir))  # RUN/prior, also when given RUN/best
    saved = saved_config(folder, resume=resume, force=force)
    if saved is not None:  # the codes of the checkpoint the prior was started on
        checkpoint = saved.source_checkpoint
    trained = open_run(run_dir, checkpoint=checkpoint, device=device, with_prior=False)
    model = trained.model
    if not model.prior_fitted_after_training:
        raise VaelabError(
            f"{run_dir} holds a {trained.config.model.model}: train-prior fits the prior of a "
            "vqvae run"
        )
    config = settle_config(saved, network, training, model, trained.checkpoint)
    if epochs is not None:
        config = replace(config, training=replace(config.training, epochs=epochs))
    data = trained.load_data(data_dir=data_dir)
    binarize, seed = trained.config.data.binarize, config.training.seed
    train_codes = encode_codes(model, data.train.x, binarize=binarize, seed=seed)
    held_codes = train_codes
    if len(data.val):
        held_codes = encode_codes(model, data.val.x, binarize=binarize, seed=seed + 1)
    torch.manual_seed(seed)  # the prior's initial weights
    prior = PixelCNNPrior(config.network).to(model.device)
    order = torch.Generator().manual_seed(seed)
    fit = PriorFit(
        folder=folder,
        run_dir=run_folder(run_dir),
        config=config,
        prior=prior,
        optimizer=torch.optim.Adam(prior.parameters(), lr=config.training.lr),
        train_codes=train_codes.to(model.device),
        held_codes=held_codes.to(model.device),
        order=order,
        epoch_order=order.get_state(),
        loop=PriorLoop(),
        precision=choose_precision(amp, model.device),
    )
    if resume:
        _restore(fit)
    elif force:
        clear_prior(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_FILE, config.to_json())  # for people: resume reads last/
    return fit


def _fit_epochs(
    fit: PriorFit, metrics: MetricsLog, interrupted: threading.Event, *, progress: bool
) -> None:
    """The remaining epochs: Adam steps on -log p(z), then the held-out NLL, best/ and last/."""
    loop, training = fit.loop, fit.config.training
    for epoch in range(loop.epoch + 1, training.epochs + 1):
        if loop.batch == 0:  # a fresh epoch; resumed mid-epoch, draw its permutation again
            fit.epoch_order = fit.order.get_state()
        else:
            fit.order.set_state(fit.epoch_order)
        started = time.perf_counter()
        batches = batch_indices(
            len(fit.train_codes),
            training.batch_size,
            shuffle=True,
            generator=fit.order,
            start_batch=loop.batch,
        )
        for idx in tqdm(batches, disable=not progress, desc=f"prior epoch {epoch}", leave=False):
            with fit.precision.autocast():  # the log-softmax and the loss are fp32
                nll = fit.prior.nll(fit.train_codes[idx.to(fit.train_codes.device)])
            fit.optimizer.zero_grad(set_to_none=True)
            nll.backward()
            fit.optimizer.step()
            loop.step, loop.batch, loop.seen = loop.step + 1, loop.batch + 1, loop.seen + len(idx)
            loop.nll_sum += float(nll.detach()) * len(idx)
            if interrupted.is_set():
                _save(fit, LAST, fit.epoch_order, {})
                raise KeyboardInterrupt(
                    f"saved the prior at epoch {epoch}, step {loop.step}; continue with: "
                    f"vaelab train-prior {fit.run_dir} --resume"
                )
        record = _epoch_record(fit, epoch, time.perf_counter() - started)
        if not math.isfinite(record["val/nll"]):
            raise VaelabError(
                f"the prior's loss became {record['val/nll']} in epoch {epoch}; try a lower --lr"
            )
        loop.epoch, loop.batch, loop.nll_sum, loop.seen = epoch, 0, 0.0, 0
        metrics.append(record)
        if record["val/nll"] < loop.best_nll:  # best/ first, as the model's trainer does
            loop.best_nll = record["val/nll"]
            _save(fit, BEST, fit.order.get_state(), record)
        _save(fit, LAST, fit.order.get_state(), record)
        logger.info(_summary(record, training.epochs))


def _epoch_record(fit: PriorFit, epoch: int, seconds: float) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl; "val/" is the training codes' where there is no
    validation split."""
    held = _mean_nll(fit.prior, fit.held_codes)
    return {
        "epoch": epoch,
        "step": fit.loop.step,
        "train/nll": fit.loop.nll_sum / max(fit.loop.seen, 1),
        "val/nll": held,
        "val/bits_per_code": fit.prior.bits_per_code(held),
        "epoch_seconds": seconds,
        "precision": fit.precision.name,  # of the training steps; the held-out NLL is fp32
    }


def _mean_nll(prior: PixelCNNPrior, codes: Tensor) -> float:
    """-log p(z) averaged over code grids (N, h, w), in nats per grid."""
    prior.eval()
    with torch.no_grad():
        total = sum(
            float(-prior.log_prob_indices(part).sum()) for part in codes.split(ENCODE_BATCH)
        )
    prior.train()
    return total / len(codes)


def _save(fit: PriorFit, which: str, order_state: Tensor, record: dict[str, Any]) -> None:
    """Write best/ or last/ with the optimiser, the batch order and the loop position."""
    loop = fit.loop
    meta = {
        "vaelab_version": __version__,
        "epoch": loop.epoch,
        "step": loop.step,
        "metrics": record,
    }
    state = TrainingState(
        fit.optimizer.state_dict(),
        {"batch_order": order_state, "torch": torch.get_rng_state()},
        {"loop": asdict(loop)},
    )
    save_checkpoint(fit.folder / which, fit.prior, fit.config, meta, state)


def _restore(fit: PriorFit) -> None:
    """Load last/: the weights, the optimiser, the batch order and the loop position."""
    checkpoint = resolve_checkpoint(fit.folder, prefer=LAST)
    saved = load_training_state(checkpoint)
    try:
        fit.prior.load_state_dict(read_tensors(checkpoint / WEIGHTS_FILE))
        fit.optimizer.load_state_dict(saved.optimizer)
        fit.epoch_order = saved.tensors["batch_order"]
        fit.order.set_state(fit.epoch_order)
        torch.set_rng_state(saved.tensors["torch"])
        fit.loop = PriorLoop(**saved.values["loop"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise VaelabError(
            f"the prior's training state in {checkpoint} is corrupt ({type(error).__name__})"
        ) from None
    logger.info("resuming the prior after epoch %d, step %d", fit.loop.epoch, fit.loop.step)


def _summary(record: dict[str, Any], epochs: int) -> str:
    return (
        f"prior epoch {record['epoch']}/{epochs}  train/nll {record['train/nll']:.3f}  "
        f"val/nll {record['val/nll']:.3f} nats per grid ({record['val/bits_per_code']:.3f} "
        "bits per code)"
    )
