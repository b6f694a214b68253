"""Helpers of benchmarks/conditional.py: the runs' configuration, the two baselines (a
deterministic completion network and a supervised-only classifier), the scores (accuracy, the
importance-weighted completion NLL) and the callback that keeps an M2's
checkpoint of best validation accuracy."""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vaelab
from vaelab.models.bounds import log_mean_exp
from vaelab.training.callbacks import Callbacks
from vaelab.training.metrics import read_metrics


def run_config(
    model: dict[str, Any], args: argparse.Namespace, *, data: dict[str, Any], **train: Any
) -> vaelab.RunConfig:
    """The run of `model` on `data` (the dataset, with --seed), trained with --lr,
    --batch-size, at most --epochs, --seed and --threads, and the `train` options given."""
    return vaelab.RunConfig.from_dict(
        {
            "model": model,
            "data": {"seed": args.seed, **data},
            "optim": {"lr": args.lr},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "threads": args.threads,
                **train,
            },
        }
    )


def chosen_epoch(run: Path) -> tuple[int, int, float]:
    """(epochs trained, epoch of the lowest validation loss, that loss) from metrics.jsonl."""
    records = read_metrics(run)
    best = min(records, key=lambda r: r["val/loss"])
    return len(records), best["epoch"], best["val/loss"]


class BudgetSpent(Exception):
    """Raised by `KeepBestAccuracy` at the end of the epoch that passes the time budget."""


class KeepBestAccuracy(Callbacks):
    """Copies the run's last/ (weights, config, meta) to `best-accuracy/` whenever an epoch
    brings a better `val/accuracy`, prints one line per epoch, and raises BudgetSpent at the
    end of the epoch that passes `minutes` of training."""

    def __init__(self, run: Path, minutes: float | None) -> None:
        self.run, self.minutes = run, minutes
        self.best_accuracy, self.best_epoch, self.epochs = -1.0, 0, 0
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.epochs = record["epoch"]
        accuracy = record["val/accuracy"]
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, record["epoch"]
            target = self.run / "best-accuracy"
            shutil.rmtree(target, ignore_errors=True)
            skip = shutil.ignore_patterns("training_state*")  # the model only, not the optimiser
            shutil.copytree(self.run / "last", target, ignore=skip)
        print(
            f"  val/accuracy {accuracy:.4f} (best {self.best_accuracy:.4f}, epoch "
            f"{self.best_epoch}), {self.seconds / 60:.1f} min",
            flush=True,
        )
        if self.minutes is not None and self.seconds > 60 * self.minutes:
            raise BudgetSpent(f"{self.minutes:g} minutes spent after epoch {record['epoch']}")


def accuracy(predict: Any, x: Tensor, y: Tensor, *, batch_size: int = 1000) -> float:
    """The share of x whose most probable class under `predict` (images -> (B, K) scores) is y."""
    with torch.inference_mode():
        right = sum(
            int((predict(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
    return right / len(x)


@dataclass(frozen=True)
class Fitted:
    """A baseline network after early stopping: its best state, chosen on validation."""

    network: nn.Module  # with the weights of `best_epoch`, in eval mode
    best_epoch: int  # the epoch (completion MLP) or step (classifier) of the weights kept
    trained: int  # epochs or steps run
    val_score: float  # its validation score at best_epoch
    seconds: float


def train_supervised(
    network: nn.Module,
    x: Tensor,
    y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    *,
    lr: float = 1e-3,
    max_steps: int = 5000,
    every: int = 10,
    patience: int = 50,
) -> Fitted:
    """Cross-entropy on (x, y), all of it every step (100 images), Adam; the validation
    accuracy every `every` steps picks the weights, and `patience` evaluations without a
    better one stop it."""
    started = time.perf_counter()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    best, best_state, best_at, evaluations = -1.0, None, 0, 0
    for step in range(1, max_steps + 1):
        network.train()
        loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every:
            continue
        evaluations += 1
        network.eval()
        score = accuracy(network, val_x, val_y)
        if score > best:
            best, best_state, best_at = score, copy.deepcopy(network.state_dict()), evaluations
        elif evaluations - best_at >= patience:
            break
    network.load_state_dict(best_state)
    return Fitted(
        network.eval(), best_at * every, evaluations * every, best, time.perf_counter() - started
    )


class CompletionMLP(nn.Module):
    """Pyro's CVAE-tutorial baseline: the image with its unobserved pixels set to 0 ->
    784 -> 500 -> 500 -> 784 (ReLU) -> the logits of every pixel."""

    def __init__(self, mask: Tensor, hidden: tuple[int, ...] = (500, 500)) -> None:
        super().__init__()
        self.register_buffer("mask", mask)  # (C, H, W) bool, True where observed
        sizes = [mask.numel(), *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], mask.numel()))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x * self.mask).flatten(1)).view(x.shape)  # (B, C, H, W) logits

    def nll(self, x: Tensor) -> Tensor:
        """BCE summed over the unobserved pixels, (B,): -log p(x_unobserved | x_observed)."""
        bce = F.binary_cross_entropy_with_logits(self(x), x, reduction="none")
        return (bce * ~self.mask).flatten(1).sum(dim=1)


def mean_nll(network: CompletionMLP, x: Tensor, *, batch_size: int = 1000) -> float:
    with torch.inference_mode():
        total = sum(
            float(network.nll(x[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size)
        )
    return total / len(x)


def train_completion(
    network: CompletionMLP,
    x: Tensor,
    val_x: Tensor,
    *,
    epochs: int,
    patience: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> Fitted:
    """Adam on the mean of `CompletionMLP.nll`; the best validation NLL picks the epoch, and
    `patience` epochs without a better one stop it."""
    started = time.perf_counter()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    best, best_state, best_at, epoch = float("inf"), None, 0, 0
    for epoch in range(1, epochs + 1):
        network.train()
        for idx in torch.randperm(len(x), generator=order).split(batch_size):
            loss = network.nll(x[idx]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        network.eval()
        score = mean_nll(network, val_x)
        if score < best:
            best, best_state, best_at = score, copy.deepcopy(network.state_dict()), epoch
        elif epoch - best_at >= patience:
            break
    network.load_state_dict(best_state)
    return Fitted(network.eval(), best_at, epoch, best, time.perf_counter() - started)


@dataclass(frozen=True)
class Bounds:
    """Per-image means over a test set (nats): the importance-weighted NLL and the negative
    ELBO, with the standard error of the NLL's mean."""

    nll: float
    nll_stderr: float
    neg_elbo: float


def importance_bounds(model: Any, x: Tensor, *, k: int, seed: int, batch_size: int = 8) -> Bounds:
    """-log (1/k) sum_j w_j per image, from `model.log_weights(x, k)` (k samples of q(z|x, y));
    the mean of -log w_j over the same k samples is the negative ELBO (k = 1), averaged over
    k draws."""
    generator = torch.Generator().manual_seed(seed)
    nll, neg_elbo = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            log_w = model.log_weights(x[i : i + batch_size], k, generator=generator)  # (k, B)
            nll.append(-log_mean_exp(log_w, dim=0))
            neg_elbo.append(-log_w.mean(dim=0))
    per_image = torch.cat(nll).double()
    stderr = float(per_image.std() / len(per_image) ** 0.5)
    return Bounds(float(per_image.mean()), stderr, float(torch.cat(neg_elbo).double().mean()))
