"""Conditional VAEs on MNIST (issue 13): M2 with 100 labels, quadrant completion, label fidelity.

Protocol: MNIST from $VAELAB_DATA, vaelab's split (10 % of the 60,000 training images for
validation, by --seed); every choice (epoch, checkpoint, early stop) is made on the validation
split, and the 10,000 test images are scored once, with the chosen weights.

- m2: Kingma et al.'s (2014) M2 with --labelled 100 balanced labels, trained until --epochs or
  the end of the epoch that passes --minutes; the epoch of best val/accuracy is kept and its
  classifier q(y|x) scored on test. Beside it, the same classifier network trained on the same
  100 labelled images alone (cross-entropy, Adam, stopped by validation accuracy).
- quadrants: Sohn et al. (2015) / Pyro's CVAE tutorial: complete grayscale (not binarised)
  images from 1, 2 or 3 observed quadrants. A deterministic MLP (784-500-500-784, ReLU) and a
  cvae with a learned p(z|x_observed) (hidden 500-500), each early-stopped on validation; the
  NLL is -log p(x_unobserved | x_observed) summed over the unobserved pixels: the MLP's BCE,
  and the cvae's importance-weighted bound with --k samples (and its negative ELBO, k = 1,
  the quantity of Pyro's table: an upper bound on the NLL).
- fidelity: a label-conditional cvae; --per-class samples of each label are classified by
  vaelab's cached MNIST classifier, and the share given their own label is reported.

    VAELAB_DATA=/work/shared/data python benchmarks/conditional.py m2 --minutes 60 --json m2.json
    VAELAB_DATA=/work/shared/data python benchmarks/conditional.py quadrants --json q.json
    VAELAB_DATA=/work/shared/data python benchmarks/conditional.py fidelity --json f.json
    python benchmarks/conditional.py {m2,quadrants,fidelity} --quick   # digits, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from conditional_nets import (
    BudgetSpent,
    CompletionMLP,
    KeepBestAccuracy,
    accuracy,
    chosen_epoch,
    importance_bounds,
    mean_nll,
    run_config,
    train_completion,
    train_supervised,
)

import vaelab
from vaelab.analysis.classifier import classifier_for
from vaelab.analysis.labels import label_fidelity
from vaelab.data import DataSplits
from vaelab.models.conditions import observed_mask, parse_observed
from vaelab.models.cvae import plain
from vaelab.models.networks import build_encoder

QUADRANTS = {1: "1-quadrant", 2: "2-quadrants", 3: "3-quadrants"}
# Pyro's CVAE tutorial, test loss in nats per image for 1 / 2 / 3 observed quadrants
PYRO_NN = {1: 100.4, 2: 61.9, 3: 25.4}
PYRO_CVAE = {1: 71.8, 2: 51.0, 3: 24.2}


@dataclass
class Classification:
    """A classifier's figures: the M2's q(y|x), or the supervised-only network."""

    trained: int  # epochs (M2) or steps (supervised only)
    chosen: int  # the epoch or step of the best validation accuracy: the weights scored
    val_accuracy: float
    test_accuracy: float
    train_minutes: float


@dataclass
class M2Record:
    labelled: int
    m2: Classification
    supervised: Classification
    published: str = "Kingma et al. 2014 M2: 0.880 (100 labels); Pyro: 0.932, supervised 0.771"


@dataclass
class Completion:
    """One completion model's figures on a number of observed quadrants."""

    epochs: int  # trained
    chosen_epoch: int  # of the best validation loss: the weights scored
    val_loss: float  # the NN's validation NLL; the cvae's validation loss (-ELBO)
    test_nll: float  # the NN's BCE; the cvae's importance-weighted bound, k samples
    train_minutes: float
    test_neg_elbo: float | None = None  # the cvae's, k = 1 (Pyro's figure)
    test_nll_stderr: float | None = None
    k: int | None = None
    score_minutes: float | None = None


@dataclass
class QuadrantRecord:
    observed: int  # quadrants
    observe: str  # vaelab's canonical quadrant names
    nn: Completion
    cvae: Completion
    pyro_nn: float
    pyro_cvae_neg_elbo: float


@dataclass
class FidelityRecord:
    epochs: int
    chosen_epoch: int
    train_minutes: float
    per_class: int
    fidelity: list[float]  # per class: the share of its samples classified as it
    mean_fidelity: float
    classifier_test_accuracy: float


def setup(args: argparse.Namespace) -> str:
    """Set the threads, print the command and settings; the dataset to use."""
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # vaelab's epoch lines
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("settings:", json.dumps({k: v for k, v in vars(args).items() if k != "run"}))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    return "digits" if args.quick else "mnist"


def train_m2(args: argparse.Namespace, dataset: str) -> tuple[Any, DataSplits, Classification]:
    """M2 until --epochs or --minutes; its checkpoint of best val/accuracy, scored once."""
    model = {
        "model": "m2",
        "latent_dim": args.latent_dim,
        "hidden_dims": args.hidden_dims,
        "architecture": args.arch,
        "classifier_weight": args.classifier_weight,
    }
    data = {"dataset": dataset, "labelled": args.labelled}
    config = run_config(model, args, data=data, amp=args.amp)
    splits = vaelab.load_data(config.data, progress=False)
    run = Path(args.out) / "m2"
    keep = KeepBestAccuracy(run, args.minutes)
    try:
        vaelab.train(config, run, force=True, progress=False, data=splits, callbacks=keep)
    except BudgetSpent as spent:
        print(f"stopped: {spent}")
    m2 = vaelab.load(run / "best-accuracy")
    val_accuracy = accuracy(m2.predict_proba, splits.val.x, splits.val.y)
    test_accuracy = accuracy(m2.predict_proba, splits.test.x, splits.test.y)
    scores = Classification(
        keep.epochs, keep.best_epoch, val_accuracy, test_accuracy, keep.seconds / 60
    )
    return m2, splits, scores


def supervised_only(m2: Any, data: DataSplits, args: argparse.Namespace) -> Classification:
    """The M2's classifier network, trained on the M2's labelled images alone."""
    labelled = data.train.y >= 0
    torch.manual_seed(args.seed)
    network = build_encoder(plain(m2.config), m2.classes)
    fit = train_supervised(
        network, data.train.x[labelled], data.train.y[labelled], data.val.x, data.val.y, lr=args.lr
    )
    test_accuracy = accuracy(fit.network, data.test.x, data.test.y)
    return Classification(
        fit.trained, fit.best_epoch, fit.val_score, test_accuracy, fit.seconds / 60
    )


def part_m2(args: argparse.Namespace) -> list[M2Record]:
    m2, data, scores = train_m2(args, setup(args))
    record = M2Record(int((data.train.y >= 0).sum()), scores, supervised_only(m2, data, args))
    print(
        "\n| model | labelled | trained (chosen) | training | val accuracy | test accuracy |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, r, unit in (
        ("M2", record.m2, "epochs"),
        ("supervised only", record.supervised, "steps"),
    ):
        print(
            f"| {name} | {record.labelled} | {r.trained} {unit} ({r.chosen}) | "
            f"{r.train_minutes:.1f} min | {r.val_accuracy:.4f} | {r.test_accuracy:.4f} |"
        )
    print(f"published: {record.published}")
    return [record]


def completion_nn(data: DataSplits, observe: str, args: argparse.Namespace) -> Completion:
    """Pyro's deterministic baseline, early-stopped on the validation NLL; its test NLL."""
    channels, height, width = data.shape
    mask = observed_mask(observe, height, width).expand(channels, height, width)
    torch.manual_seed(args.seed)
    fit = train_completion(
        CompletionMLP(mask.clone()),
        data.train.x,
        data.val.x,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
    )
    test_nll = mean_nll(fit.network, data.test.x)
    return Completion(fit.trained, fit.best_epoch, fit.val_score, test_nll, fit.seconds / 60)


def completion_cvae(data: DataSplits, observe: str, args: argparse.Namespace) -> Completion:
    """A cvae with a learned p(z|x_observed), its best/ (by validation loss) scored on test by
    the importance-weighted bound and the ELBO."""
    model = {
        "model": "cvae",
        "observe": observe,
        "conditional_prior": True,
        "latent_dim": args.latent_dim,
        "hidden_dims": [500, 500],
    }
    config = run_config(model, args, data={"dataset": data.name}, early_stopping=args.patience)
    run = Path(args.out) / f"cvae-{observe.replace(',', '+')}"
    started = time.perf_counter()
    vaelab.train(config, run, force=True, progress=False, data=data)
    train_minutes = (time.perf_counter() - started) / 60
    epochs, best_epoch, val_loss = chosen_epoch(run)
    started = time.perf_counter()
    bounds = importance_bounds(vaelab.load(run), data.test.x, k=args.k, seed=args.seed)
    score_minutes = (time.perf_counter() - started) / 60
    return Completion(
        epochs,
        best_epoch,
        val_loss,
        bounds.nll,
        train_minutes,
        bounds.neg_elbo,
        bounds.nll_stderr,
        args.k,
        score_minutes,
    )


def part_quadrants(args: argparse.Namespace) -> list[QuadrantRecord]:
    dataset = setup(args)
    data = vaelab.load_data(vaelab.DataConfig(dataset=dataset, seed=args.seed), progress=False)
    records = []
    for observed in args.observed:
        observe = parse_observed(QUADRANTS[observed])
        nn, cvae = completion_nn(data, observe, args), completion_cvae(data, observe, args)
        records.append(
            QuadrantRecord(observed, observe, nn, cvae, PYRO_NN[observed], PYRO_CVAE[observed])
        )
        print(
            f"{observe}: NN test NLL {nn.test_nll:.2f} ({nn.train_minutes:.1f} min), cvae "
            f"{cvae.test_nll:.2f} ({cvae.train_minutes:.1f} min)",
            flush=True,
        )
    print(
        f"\nTest -log p(x_unobserved | x_observed), nats per image, {len(data.test)} images. "
        f"The cvae's NLL is the importance-weighted bound with k = {args.k}; its -ELBO "
        "(k = 1) is what Pyro's table reports (Trace_ELBO), an upper bound on the NLL.\n\n"
        "| observed | NN NLL (Pyro) | cvae NLL | cvae -ELBO (Pyro) | epochs NN, cvae (chosen) "
        "| NN time | cvae time | scoring |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in records:
        nn, cvae = r.nn, r.cvae
        print(
            f"| {r.observed} | {nn.test_nll:.1f} ({r.pyro_nn}) | {cvae.test_nll:.1f} ± "
            f"{cvae.test_nll_stderr:.1f} | {cvae.test_neg_elbo:.1f} ({r.pyro_cvae_neg_elbo}) "
            f"| {nn.epochs} ({nn.chosen_epoch}), {cvae.epochs} ({cvae.chosen_epoch}) | "
            f"{nn.train_minutes:.1f} min | {cvae.train_minutes:.1f} min | "
            f"{cvae.score_minutes:.1f} min |"
        )
    return records


def part_fidelity(args: argparse.Namespace) -> list[FidelityRecord]:
    dataset = setup(args)
    data = vaelab.load_data(vaelab.DataConfig(dataset=dataset, seed=args.seed), progress=False)
    model = {"model": "cvae", "latent_dim": args.latent_dim, "hidden_dims": args.hidden_dims}
    config = run_config(model, args, data={"dataset": dataset}, early_stopping=args.patience)
    run = Path(args.out) / "cvae-labels"
    started = time.perf_counter()
    vaelab.train(config, run, force=True, progress=False, data=data)
    train_minutes = (time.perf_counter() - started) / 60
    epochs, best_epoch, _ = chosen_epoch(run)
    classifier = classifier_for(data)
    per_class = args.per_class
    fidelity = label_fidelity(vaelab.load(run), classifier, per_class=per_class, seed=args.seed)
    record = FidelityRecord(
        epochs,
        best_epoch,
        train_minutes,
        per_class,
        list(fidelity.per_class),
        fidelity.mean,
        classifier.test_accuracy,
    )
    print(
        f"\nLabel fidelity: {per_class} samples of each label, classified by vaelab's cached "
        f"classifier (its own {classifier.accuracy_split} accuracy "
        f"{classifier.test_accuracy:.4f}); cvae of {epochs} epochs (best/: epoch "
        f"{best_epoch}), {train_minutes:.1f} min\n\n| label | fidelity |\n| --- | --- |"
    )
    for label, share in enumerate(record.fidelity):
        print(f"| {label} | {share:.3f} |")
    print(f"| mean | {record.mean_fidelity:.3f} |")
    return [record]


QUICK = {"epochs": 2, "patience": 1, "minutes": None, "per_class": 100}
DEFAULTS = {  # per part: epochs (at most), latent size, batch size
    "m2": (1000, 50, 100),
    "quadrants": (30, 32, 128),
    "fidelity": (30, 16, 128),
}


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The script's parser, and each part's."""
    main = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = main.add_subparsers(dest="part", required=True)
    m2 = parts.add_parser("m2", help="M2 with 100 labels, and the supervised-only classifier")
    m2.set_defaults(run=part_m2)
    m2.add_argument("--minutes", type=float, default=60.0, help="training budget (wall clock)")
    m2.add_argument("--labelled", type=int, default=100)
    m2.add_argument("--hidden-dims", type=int, nargs="+", default=[500])
    m2.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    m2.add_argument(
        "--classifier-weight",
        type=float,
        help="w of the mean classification loss (default 0.1 N / N_labelled)",
    )
    m2.add_argument("--amp", action="store_true")
    quadrants = parts.add_parser("quadrants", help="completion from 1, 2, 3 quadrants")
    quadrants.set_defaults(run=part_quadrants)
    quadrants.add_argument("--observed", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3])
    quadrants.add_argument("--k", type=int, default=1000, help="importance samples of the NLL")
    fidelity = parts.add_parser("fidelity", help="label fidelity of a class-conditional cvae")
    fidelity.set_defaults(run=part_fidelity)
    fidelity.add_argument("--per-class", type=int, default=1000)
    fidelity.add_argument("--hidden-dims", type=int, nargs="+", default=[500, 500])
    for name, part in parts.choices.items():
        epochs, latent_dim, batch_size = DEFAULTS[name]
        part.add_argument("--quick", action="store_true", help="digits, 2 epochs: a smoke test")
        part.add_argument("--threads", type=int, default=1, help="torch and OMP threads")
        part.add_argument("--epochs", type=int, default=epochs, help="at most this many")
        part.add_argument("--latent-dim", type=int, default=latent_dim)
        part.add_argument("--batch-size", type=int, default=batch_size)
        part.add_argument("--lr", type=float, default=1e-3)
        part.add_argument("--seed", type=int, default=0, help="of the split, labels and training")
        part.add_argument("--out", default="runs/conditional", help="folder of the runs")
        part.add_argument("--json", metavar="PATH", help="write the record here")
        if name != "m2":
            part.add_argument("--patience", type=int, default=3, help="early-stopping epochs")
    return main, parts.choices


def main() -> None:
    main_parser, parts = parser()
    args = main_parser.parse_args()
    if args.quick:  # a smoke test on the offline digits: QUICK's defaults, under flags given
        parts[args.part].set_defaults(**{k: v for k, v in QUICK.items() if hasattr(args, k)})
        args = main_parser.parse_args()
    started = time.perf_counter()
    records = args.run(args)
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{args.part}: {minutes:.1f} min wall time in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        record = {
            "part": args.part,
            "command": shlex.join([sys.executable, *sys.argv]),
            "settings": {k: v for k, v in vars(args).items() if k != "run"},
            "dataset": "digits" if args.quick else "mnist",
            "wall_minutes": minutes,
            "records": [asdict(r) for r in records],
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
