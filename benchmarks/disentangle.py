"""Disentanglement of VAE, beta-VAE, beta-TCVAE and FactorVAE on the shapes CPU grid.

Protocol: every model is trained on `--dataset shapes --image-size 32` (the CPU grid: 3 shapes x
6 scales x 16 orientations x 16 x 16 positions, 73,728 binary 32 x 32 images; 70 % train, 10 %
validation, 20 % test, split seed 0) with the same networks (MLP 1024-H-H-10 encoder and its
mirror, ReLU, Bernoulli decoder, D = 10 latents), Adam 1e-3, batch --batch-size, for --epochs
epochs, one seed after another. The models' weights are their papers' dSprites settings, fixed
in advance and not tuned here: beta-VAE beta = 4 (Higgins et al. 2017), beta-TCVAE alpha =
gamma = 1, beta = 6 (Chen et al. 2018), FactorVAE gamma = 40 (Kim & Mnih 2018; its
discriminator has 2 hidden layers of 512 instead of the paper's 5 of 1000, whose cost per step
would be 5 times the VAE's on this CPU); the VAE is beta = 1. Each run's best checkpoint (by
validation loss) is scored on the whole test split (14,746 images) with the metrics of `vaelab
eval --disentanglement` (MIG of the binned means and from the posterior, DCI, SAP, FactorVAE
score; seed 0). The table gives the mean and sample standard deviation over the seeds, and the
training wall time (runs go --jobs at a time, each on one thread, so times depend on the
machine's load).

    python benchmarks/disentangle.py [--seeds 0 1 2] [--epochs 50] [--jobs 2] \\
        [--models vae beta-vae btcvae factorvae] [--out runs/disentangle] [--json out.json]
    python benchmarks/disentangle.py --score-only out.json   # score the same runs again
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from vaelab.disentanglement.evaluate import evaluate_disentanglement
from vaelab.runs import open_run

MODELS: dict[str, list[str]] = {  # the flags of each model, beyond the shared ones
    "vae": ["--model", "vae"],
    "beta-vae": ["--model", "vae", "--beta", "4"],
    "btcvae": ["--model", "btcvae", "--alpha", "1", "--beta", "6", "--gamma", "1"],
    # a smaller discriminator than the paper's 5 x 1000 (which costs 5x the VAE's step here)
    "factorvae": ["--model", "factorvae", "--gamma", "40", "--discriminator-hidden", "512", "512"],
}
SCORES = (
    "mig",
    "mig_posterior",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "sap",
    "factorvae_score",
)


def train_command(model: str, seed: int, run: Path, args: argparse.Namespace) -> list[str]:
    hidden = [str(args.hidden)] * 2
    return [
        sys.executable, "-m", "vaelab", "train", *MODELS[model],
        "--dataset", "shapes", "--image-size", "32", "--latent-dim", "10",
        "--hidden-dims", *hidden, "--epochs", str(args.epochs), "--batch-size",
        str(args.batch_size), "--lr", "1e-3", "--seed", str(seed), "--threads", "1",
        "--out", str(run), "--force", "--no-progress", "--quiet", "--no-figures",
    ]  # fmt: skip


def train_one(model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    run = Path(args.out) / f"{model}-seed{seed}"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(train_command(model, seed, run, args), env=env, capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{model} seed {seed} failed:\n{done.stderr.decode()[-2000:]}")
    print(f"trained {model} seed {seed} in {seconds / 60:.1f} min", flush=True)
    return {"model": model, "seed": seed, "run": str(run), "train_seconds": seconds}


def score(entry: dict[str, Any]) -> dict[str, Any]:
    trained = open_run(entry["run"])
    split = trained.choose_split("test")
    result = evaluate_disentanglement(
        trained.model, split.x, split.factors, split.factor_info, seed=0
    )
    return entry | {
        "scores": result.scores,
        "mig_per_factor": result.to_dict()["mig_per_factor"],
        "mig_posterior_per_factor": result.to_dict()["mig_posterior_per_factor"],
        "captured": result.captured_factors(),
    }


def summary(entries: list[dict[str, Any]], models: list[str]) -> str:
    header = f"{'model':<10}" + "".join(f"{name:>22}" for name in SCORES) + f"{'train min':>12}"
    lines = [header]
    for model in models:
        rows = [e for e in entries if e["model"] == model]
        cells = []
        for name in SCORES:
            values = [r["scores"][name] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>14.3f} ± {spread:5.3f}")
        minutes = statistics.mean(r["train_seconds"] for r in rows) / 60
        lines.append(f"{model:<10}" + "".join(cells) + f"{minutes:>12.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time, 1 thread each")
    parser.add_argument("--out", default="runs/disentangle")
    parser.add_argument("--json", help="write every run's scores here")
    parser.add_argument(
        "--score-only",
        metavar="JSON",
        help="train nothing: score again the runs listed in a JSON this script wrote",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.score_only:
        keep = ("model", "seed", "run", "train_seconds")
        runs = json.loads(Path(args.score_only).read_text())["runs"]
        trained = [{k: r[k] for k in keep} for r in runs if r["model"] in args.models]
    else:
        jobs = [(m, s) for s in args.seeds for m in args.models]
        with ThreadPoolExecutor(args.jobs) as pool:
            trained = list(pool.map(lambda job: train_one(*job, args), jobs))
    entries = [score(entry) for entry in trained]
    for entry in entries:
        scores = "  ".join(f"{k} {v:.3f}" for k, v in entry["scores"].items())
        print(f"{entry['model']:<10} seed {entry['seed']}: {scores}")
        print(f"    latents capture: {entry['captured']}")
    print(summary(entries, args.models))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": entries}, indent=2))


if __name__ == "__main__":
    main()
