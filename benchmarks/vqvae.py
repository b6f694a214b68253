"""VQ-VAE with its PixelCNN prior against a Gaussian conv VAE given the same training time.

Protocol, per dataset (MNIST, Fashion-MNIST; dynamically binarised, Bernoulli decoder) and seed:
  1. a VQ-VAE (EMA codebook with dead-entry restarts, K = 128 entries of D = 16, the default
     conv channels, so a 7 x 7 code grid) trained --vq-epochs epochs, then its gated PixelCNN
     prior (--prior-channels x --prior-layers) fitted --prior-epochs epochs to its codes;
  2. a Gaussian conv VAE (same conv channels, latent size 20) trained for the same wall time as
     both VQ-VAE stages together: one epoch at a time (resume=True), stopping when the next
     epoch would end further from that time than stopping now (so within half an epoch of it).
Both train on the 54,000 training images (10% held out picks the best checkpoint), batch 128,
Adam 1e-3, and are scored on the 10,000 test images, binarised once with seed 0:
  - reconstruction: MSE per pixel of the decoded mean and -log p(x|z) in nats;
  - the bound on -log p(x), in nats and bits/dim: for the VQ-VAE the ELBO under the PixelCNN
    prior (its posterior is a point mass, so k does not apply); for the VAE the importance-
    weighted bound with --k samples (Burda et al. 2015);
  - codebook usage and perplexity (VQ-VAE);
  - the Frechet distance of --samples prior samples to the test images in the features of the
    cached classifier that `vaelab compare` uses (and, once per dataset, of as many training
    images: the floor at this sample size);
  - wall times of training, and of drawing a 64-image grid from the prior (median of 3).
Every setting is fixed in advance from the time budget (about 10-12 minutes of training per
dataset and seed on 2 threads), not tuned on the test set. Times depend on the machine's load:
the log also gives each training's CPU time and the 1-minute load average when it ended.

    VAELAB_DATA=../shared/data python benchmarks/vqvae.py [--datasets mnist fashion-mnist] \\
        [--seeds 0 1 2] [--vq-epochs 5] [--prior-epochs 4] [--k 100] [--json vqvae.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import vaelab
from vaelab.analysis.classifier import classifier_for
from vaelab.analysis.evaluate import evaluate
from vaelab.analysis.latents import decode_codes
from vaelab.analysis.measures import frechet_distance
from vaelab.analysis.samplers import fit_sampler
from vaelab.models.pixelcnn import PixelCNNConfig
from vaelab.training.code_prior import PriorTraining
from vaelab.training.prior_trainer import train_prior

DATASETS = ("mnist", "fashion-mnist", "digits")  # digits (8 x 8): a quick end-to-end check
VAE_LATENT = 20
GRID_REPEATS = 3


def run_config(model: str, dataset: str, seed: int, epochs: int, threads: int) -> vaelab.RunConfig:
    if model == "vqvae":
        network = vaelab.ModelConfig(
            model="vqvae", codebook_size=128, code_dim=16, codebook_update="ema"
        )
    else:
        network = vaelab.ModelConfig(model="vae", architecture="conv", latent_dim=VAE_LATENT)
    return vaelab.RunConfig(
        model=network,
        data=vaelab.DataConfig(dataset=dataset, binarize=True),
        train=vaelab.TrainConfig(epochs=epochs, seed=seed, threads=threads, device="cpu"),
    )


def train_vqvae(run: Path, data, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Both stages of the VQ-VAE; their wall times in seconds."""
    config = run_config("vqvae", data.name, seed, args.vq_epochs, args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    vaelab.train(config, run, force=True, progress=False, data=data)
    vq_seconds = time.perf_counter() - started
    network = PixelCNNConfig(
        codebook_size=1, grid=(1, 1), channels=args.prior_channels, layers=args.prior_layers
    )  # train_prior fills in the codebook size and grid from the run
    started = time.perf_counter()
    train_prior(
        run,
        network,
        PriorTraining(epochs=args.prior_epochs, seed=seed),
        force=True,
        device="cpu",
        progress=False,
    )
    prior_seconds = time.perf_counter() - started
    return {
        "epochs": args.vq_epochs,
        "prior_epochs": args.prior_epochs,
        "train_seconds": vq_seconds,
        "prior_seconds": prior_seconds,
        "total_seconds": vq_seconds + prior_seconds,
        "total_cpu_seconds": time.process_time() - cpu,
        "load_average": os.getloadavg()[0],
    }


def train_vae_for(budget: float, run: Path, data, seed: int, threads: int) -> dict[str, Any]:
    """Train the VAE an epoch at a time until `budget` seconds are (about) used: stop once
    the next epoch, at the mean cost so far, would end further from the budget than now."""
    started, cpu, epochs = time.perf_counter(), time.process_time(), 0
    while True:
        epochs += 1
        config = run_config("vae", data.name, seed, epochs, threads)
        first = epochs == 1
        vaelab.train(config, run, resume=not first, force=first, progress=False, data=data)
        elapsed = time.perf_counter() - started
        if elapsed + elapsed / epochs / 2 > budget:
            break
    return {
        "epochs": epochs,
        "train_seconds": elapsed,
        "total_seconds": elapsed,
        "total_cpu_seconds": time.process_time() - cpu,
        "load_average": os.getloadavg()[0],
    }


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def grid_seconds(model, seed: int) -> list[float]:
    """Wall times of drawing and decoding a 64-image grid from the model's prior."""
    times = []
    for repeat in range(GRID_REPEATS):
        generator = torch.Generator().manual_seed(seed * 1000 + 3 + repeat)
        started = time.perf_counter()
        with torch.inference_mode():
            model.sample(64, generator=generator)
        times.append(time.perf_counter() - started)
    return times


def measure(run: Path, data, classifier, test_features, seed: int, k: int, n: int) -> dict:
    model = vaelab.load(run)  # the best checkpoint; a VQ-VAE with its fitted prior attached
    started = time.perf_counter()
    result = evaluate(model, data.test.x, k=k, binarize=True, seed=0)
    eval_seconds = time.perf_counter() - started
    is_vq = model.config.model == "vqvae"
    # As `vaelab compare`: codes from the model's prior, decoded, in the classifier's features.
    started = time.perf_counter()
    z = fit_sampler("prior", model).sample(n, generator=torch.Generator().manual_seed(seed + 2))
    images = decode_codes(model, z)
    sample_seconds = time.perf_counter() - started
    frechet = frechet_distance(classifier.features(images), test_features)
    grid = grid_seconds(model, seed)
    measures = result.measures or {}
    return {
        "params": count(model.encoder) + count(model.decoder) + model.quantizer.codebook.numel()
        if is_vq
        else count(model),
        "prior_params": count(model.prior) if is_vq else 0,
        "k": result.k,
        "mse": result.mse,
        "recon": result.recon,
        "nll": result.nll,
        "nll_stderr": result.nll_stderr,
        "bits_per_dim": result.nll_bits_per_dim,
        "neg_elbo": result.neg_elbo,
        "prior": result.prior,
        "codebook_usage": measures.get("codebook_usage"),
        "perplexity": measures.get("perplexity"),
        "frechet": frechet,
        "frechet_samples": n,
        "sample_seconds": sample_seconds,
        "grid64_seconds": statistics.median(grid),
        "grid64_all_seconds": grid,
        "eval_seconds": eval_seconds,
    }


def reference_frechet(data, classifier, test_features, n: int) -> float:
    """n training images against the test images: what real images score at this size."""
    index = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:n]
    return frechet_distance(classifier.features(data.train.x[index]), test_features)


def stages(row: dict) -> str:
    """The training stages' wall times, and the process's CPU time (2 threads, unloaded: about
    twice the wall time; much less means the machine was busy with other work)."""
    cpu = f"CPU {row['total_cpu_seconds']:.0f} s, load {row['load_average']:.1f}"
    if "prior_seconds" not in row:
        return f"{row['train_seconds']:.0f} s, resumed per epoch; {cpu}"
    return f"VQ-VAE {row['train_seconds']:.0f} s + prior {row['prior_seconds']:.0f} s; {cpu}"


def spread(values: list[float | None], digits: int, scale: float = 1.0) -> str:
    values = [v * scale for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_table(rows: list[dict], references: dict[str, float]) -> None:
    columns = [  # header, key, digits, scale
        ("epochs", "epochs", 1, 1),
        ("prior epochs", "prior_epochs", 0, 1),
        ("training, min", "total_seconds", 1, 1 / 60),
        ("MSE/pixel", "mse", 4, 1),
        ("recon NLL, nats", "recon", 2, 1),
        ("bound on -log p(x), nats", "nll", 2, 1),
        ("bits/dim", "bits_per_dim", 4, 1),
        ("codebook usage, %", "codebook_usage", 1, 100),
        ("perplexity", "perplexity", 1, 1),
        ("Fréchet, prior samples", "frechet", 2, 1),
        ("64-grid, s", "grid64_seconds", 2, 1),
    ]
    print("\n| dataset | model | params | seeds | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- " * (4 + len(columns)) + "|")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name in ("vqvae", "vae"):
            group = [r for r in rows if r["dataset"] == dataset and r["model"] == name]
            if not group:
                continue
            first = group[0]
            title = "VQ-VAE + PixelCNN" if name == "vqvae" else f"conv VAE, k={first['k']}"
            params = f"{first['params']:,}"
            if first["prior_params"]:
                params += f" + {first['prior_params']:,}"
            cells = [spread([r.get(key) for r in group], d, s) for _, key, d, s in columns]
            print(f"| {dataset} | {title} | {params} | {len(group)} | " + " | ".join(cells) + " |")
    for dataset, value in references.items():
        print(f"Fréchet distance of training to test images ({dataset}): {value:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=["mnist", "fashion-mnist"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--vq-epochs", type=int, default=5, help="about 25-30 s each on MNIST")
    parser.add_argument("--prior-epochs", type=int, default=4, help="about 33 s each at 32x6")
    parser.add_argument("--prior-channels", type=int, default=32)
    parser.add_argument("--prior-layers", type=int, default=6)
    parser.add_argument(
        "--k", type=int, default=100, help="VAE importance samples (k=100: ~3 min on 2 threads)"
    )
    parser.add_argument("--samples", type=int, default=10000, help="prior samples per Fréchet")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (set explicitly)")
    parser.add_argument("--out", default="/tmp/vqbench", help="folder for the run folders")
    parser.add_argument(
        "--json", default=None, help="raw per-seed figures (default OUT/vqvae.json)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / "vqvae.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; VQ-VAE {args.vq_epochs} "
        f"epochs + PixelCNN {args.prior_channels}x{args.prior_layers} {args.prior_epochs} epochs; "
        f"VAE for the same wall time, an epoch at a time (resume), stopping within half an "
        f"epoch of it; VAE bound with k = {args.k}; Fréchet on {args.samples} prior samples",
        flush=True,
    )
    rows: list[dict] = []
    references: dict[str, float] = {}
    accuracies: dict[str, float] = {}
    begun = time.perf_counter()
    for dataset in args.datasets:
        data = vaelab.load_data(vaelab.DataConfig(dataset=dataset, binarize=True), progress=False)
        classifier = classifier_for(data)
        accuracies[dataset] = classifier.test_accuracy
        test_features = classifier.features(data.test.x)
        references[dataset] = reference_frechet(data, classifier, test_features, args.samples)
        for seed in args.seeds:
            vq_run, vae_run = out / f"{dataset}-vqvae-s{seed}", out / f"{dataset}-vae-s{seed}"
            timing = {"vqvae": train_vqvae(vq_run, data, seed, args)}
            budget = timing["vqvae"]["total_seconds"]
            timing["vae"] = train_vae_for(budget, vae_run, data, seed, args.threads)
            for name, run in (("vqvae", vq_run), ("vae", vae_run)):
                row = {"dataset": dataset, "model": name, "seed": seed, "run": str(run)}
                row |= timing[name] | measure(
                    run, data, classifier, test_features, seed, args.k, args.samples
                )
                rows.append(row)
                print(
                    f"{dataset} {name} seed {seed}: {row['epochs']} epochs, "
                    f"{row['total_seconds'] / 60:.1f} min ({stages(row)}); "
                    f"MSE {row['mse']:.4f}, recon "
                    f"{row['recon']:.2f}, bound {row['nll']:.2f} nats "
                    f"({row['bits_per_dim']:.4f} bits/dim, k={row['k']}), usage "
                    f"{row['codebook_usage']}, Fréchet {row['frechet']:.2f}, 64-grid "
                    f"{row['grid64_seconds']:.2f} s, eval {row['eval_seconds']:.0f} s, "
                    f"{args.samples} samples {row['sample_seconds']:.0f} s",
                    flush=True,
                )
                report = {
                    "settings": vars(args) | {"torch": torch.__version__},
                    "classifier_accuracy": accuracies,
                    "reference_frechet": references,
                    "rows": rows,
                }
                json_path.write_text(json.dumps(report, indent=2) + "\n")  # after every row
    print_table(rows, references)
    print(f"\nraw figures: {json_path}; total {(time.perf_counter() - begun) / 60:.1f} min")


if __name__ == "__main__":
    main()
