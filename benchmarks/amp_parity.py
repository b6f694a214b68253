"""Does `--amp` change what the model learns, or what `eval` reports? Measured on MNIST.

Training: the classic MNIST VAE (784-400-20, ReLU, Bernoulli decoder, Adam 1e-3, batches of
128, dynamic binarisation, all 60,000 training images) for --epochs epochs, in fp32 and with
--amp, for each seed. Each run's final weights are scored on the 10,000 test images, binarised
once with seed 0, by the importance-weighted NLL with k = --k, in fp32.

Evaluation: every model above, and every run given with --runs (the best preset, say), is
scored again with `evaluate(..., amp=True)` (bfloat16 networks, fp32 log-weights), on the same
samples, and the difference to its fp32 score is printed.

    VAELAB_DATA=../shared/data python benchmarks/amp_parity.py --out runs/amp \\
        [--seeds 0 1 2] [--epochs 30] [--k 1000] [--runs runs/mnist-best]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import vaelab
from vaelab.analysis.evaluate import evaluate
from vaelab.training.metrics import read_metrics
from vaelab.training.precision import cpu_bf16_units, native_bf16


def classic_config(seed: int, epochs: int, amp: bool, threads: int) -> vaelab.RunConfig:
    return vaelab.RunConfig.from_dict(
        {
            "model": {"model": "vae", "latent_dim": 20, "hidden_dims": [400]},
            "data": {"dataset": "mnist", "val_fraction": 0.0, "binarize": True},
            "optim": {"lr": 1e-3},
            "train": {
                "epochs": epochs,
                "batch_size": 128,
                "seed": seed,
                "amp": amp,
                "device": "cpu",
                "threads": threads,
            },
        }
    )


def score(run: Path, test_x: torch.Tensor, k: int) -> dict[str, float]:
    """The run's final weights on the test images: fp32 and bf16 NLL, and their timings."""
    model = vaelab.load(run, checkpoint="last")
    exact = evaluate(model, test_x, k=k, binarize=True, seed=0)
    reduced = evaluate(model, test_x, k=k, binarize=True, seed=0, amp=True)
    if reduced.precision != "bf16":
        raise SystemExit("this CPU has no native bfloat16: nothing to compare")
    return {
        "nll": exact.nll,
        "nll_stderr": exact.nll_stderr,
        "nll_amp_eval": reduced.nll,
        "eval_difference": reduced.nll - exact.nll,
        "eval_seconds": exact.seconds,
        "eval_seconds_amp": reduced.seconds,
    }


def print_training_table(trained: list[dict], seeds: list[int], k: int) -> None:
    print(f"\n| seed | fp32 NLL (k={k}) | --amp NLL | difference | training fp32 / --amp |")
    print("| --- | --- | --- | --- | --- |")
    for seed in seeds:
        fp32, amp = (
            next(r for r in trained if r["seed"] == seed and r["amp"] == a) for a in (0, 1)
        )
        print(
            f"| {seed} | {fp32['nll']:.2f} ± {fp32['nll_stderr']:.2f} | {amp['nll']:.2f} ± "
            f"{amp['nll_stderr']:.2f} | {amp['nll'] - fp32['nll']:+.2f} | "
            f"{fp32['train_seconds']:.0f} s / {amp['train_seconds']:.0f} s |"
        )
    for amp in (False, True):
        values = [r["nll"] for r in trained if r["amp"] == amp]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{'--amp' if amp else 'fp32 '} mean {statistics.mean(values):.2f} ± {spread:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="none: only score --runs"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--runs", nargs="*", default=[], help="trained runs to score both ways")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default: 1, as the README's figures); set, since torch's default "
        "can run 100x slower on a busy machine",
    )
    parser.add_argument("--out", default="runs/amp", help="folder for the runs and amp.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not native_bf16(torch.device("cpu")):
        raise SystemExit(f"this CPU's bfloat16 units: {cpu_bf16_units()}; --amp would be fp32")

    data = vaelab.load_data(vaelab.DataConfig(dataset="mnist", val_fraction=0.0), progress=False)
    test_x = data.test.x
    out = Path(args.out)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), bfloat16 units: "
        f"{cpu_bf16_units()}; {args.epochs} epochs, seeds {args.seeds}, k = {args.k}",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        for amp in (False, True):
            run = out / f"vae-{'amp' if amp else 'fp32'}-seed{seed}"
            if not (run / "last").is_dir() or len(read_metrics(run)) < args.epochs:
                config = classic_config(seed, args.epochs, amp, args.threads)
                vaelab.train(config, run, force=True, progress=False)
            records = read_metrics(run)
            row = {
                "run": str(run),
                "seed": seed,
                "amp": amp,
                "precision": records[-1].get("precision"),
                "train_seconds": sum(r["epoch_seconds"] for r in records),
                "samples_per_second": statistics.median(
                    r["samples_per_second"] for r in records[1:]
                ),
                **score(run, test_x, args.k),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    for path in args.runs:
        row = {"run": path, "seed": None, "amp": None, **score(Path(path), test_x, args.k)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "amp.json").write_text(json.dumps(rows, indent=2) + "\n")

    trained = [r for r in rows if r["amp"] is not None]
    if trained:
        print_training_table(trained, args.seeds, args.k)
    print(f"\n| model | eval fp32 NLL (k={args.k}) | eval --amp NLL | difference | eval time |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['run']} | {r['nll']:.3f} | {r['nll_amp_eval']:.3f} | "
            f"{r['eval_difference']:+.4f} | {r['eval_seconds']:.0f} s / "
            f"{r['eval_seconds_amp']:.0f} s |"
        )


if __name__ == "__main__":
    main()
