"""Test NLL on dynamically binarised MNIST, beside the IWAE paper's table (Burda et al. 2015).

Protocol: train on all 60,000 training images, each batch a fresh Bernoulli draw; score the
10,000 test images, binarised once with seed 0, by the importance-weighted estimate with
k = 5000. Architecture: the paper's one stochastic layer, 784-200-200-50 tanh encoder and
decoder. Models: VAE (k = 1) and IWAE with k = 5 and 50, each for --epochs epochs (the paper
trained 3,280). Runs already trained (the `presets/mnist-best.toml` one, say) join the table
with --runs; their wall time is the sum of their epochs' times in metrics.jsonl.

    VAELAB_DATA=../shared/data python benchmarks/mnist_nll.py --epochs 10 --out runs/nll \\
        [--models vae iwae5 iwae50] [--runs runs/mnist-best]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vaelab
from vaelab.analysis.evaluate import evaluate
from vaelab.training.metrics import read_metrics

# Burda et al. (2015), table 1, MNIST, one stochastic layer, after 3,280 epochs.
PAPER_NLL = {"vae": 86.76, "iwae50": 84.78}
MODELS = {"vae": ("elbo", 1), "iwae5": ("iwae", 5), "iwae50": ("iwae", 50)}


def paper_config(objective: str, k: int, epochs: int, batch_size: int) -> vaelab.RunConfig:
    return vaelab.RunConfig.from_dict(
        {
            "model": {
                "model": "vae",
                "latent_dim": 50,
                "hidden_dims": [200, 200],
                "activation": "tanh",
                "likelihood": "bernoulli",
                "objective": objective,
                "k": k,
            },
            "data": {"dataset": "mnist", "val_fraction": 0.0, "binarize": True},
            "optim": {"lr": 1e-3},
            "train": {"epochs": epochs, "batch_size": batch_size, "seed": 0},
        }
    )


def train_seconds(run: Path) -> float:
    return sum(record.get("epoch_seconds", 0.0) for record in read_metrics(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--models", nargs="*", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--runs", nargs="*", default=[], help="trained runs to add to the table")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default: 1; the README's table ran each model on one "
        "core); set, since torch's default can run 100x slower on a busy machine",
    )
    parser.add_argument("--out", default="runs/nll", help="folder for the runs and nll.json")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=10000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = vaelab.load_data(vaelab.DataConfig(dataset="mnist", val_fraction=0.0), progress=False)
    test_x = data.test.x[: args.test_images]
    out = Path(args.out)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(data.train)} "
        f"training and {len(test_x)} test images; k = {args.k}",
        flush=True,
    )
    runs: list[tuple[str, Path, float]] = []
    for name in args.models:
        objective, k = MODELS[name]
        run = out / name
        started = time.perf_counter()
        vaelab.train(
            paper_config(objective, k, args.epochs, args.batch_size),
            run,
            force=True,
            progress=False,
        )
        runs.append((name, run, time.perf_counter() - started))
    runs += [(Path(path).name, Path(path), train_seconds(Path(path))) for path in args.runs]

    rows = []
    for name, run, seconds in runs:
        model = vaelab.load(run, checkpoint="last")
        if model.config.data_shape != tuple(test_x.shape[1:]):
            raise SystemExit(f"{run} was not trained on MNIST (shape {model.config.data_shape})")
        result = evaluate(model, test_x, k=args.k, binarize=True, seed=0)
        rows.append(
            {
                "model": name,
                "objective": model.config.objective,
                "train_k": model.config.k,
                "epochs": len(read_metrics(run)),
                "train_minutes": seconds / 60,
                "neg_elbo": result.neg_elbo,
                "nll": result.nll,
                "nll_stderr": result.nll_stderr,
                "active_units": result.active_units,
                "latent_dim": result.latent_dim,
                "eval_images_per_second": result.images_per_second,
                "paper_nll": PAPER_NLL.get(name),
            }
        )
        print(f"evaluated {name}: NLL {result.nll:.2f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nll.json").write_text(json.dumps(rows, indent=2) + "\n")

    print(
        f"\n| model | objective | epochs | training | test -ELBO | test NLL, k={args.k} | "
        "active units | paper NLL (3,280 epochs) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        objective = "ELBO" if row["objective"] == "elbo" else f"IWAE, k={row['train_k']}"
        paper = f"{row['paper_nll']:.2f}" if row["paper_nll"] else "-"
        print(
            f"| {row['model']} | {objective} | {row['epochs']} | "
            f"{row['train_minutes']:.1f} min | {row['neg_elbo']:.2f} | "
            f"{row['nll']:.2f} ± {row['nll_stderr']:.2f} | "
            f"{row['active_units']} of {row['latent_dim']} | {paper} |"
        )


if __name__ == "__main__":
    main()
