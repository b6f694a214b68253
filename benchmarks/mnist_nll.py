"""Test NLL on dynamically binarised MNIST: vaelab's models beside their papers' figures.

The protocol of the field. Training sees dynamically binarised MNIST (each batch a fresh
Bernoulli draw of the grey levels); the 10,000 test images are binarised once (seed 0, drawn on
the CPU) and scored by the importance-weighted bound with k = 5000 (Burda et al. 2015). The
test set is scored once per trained run, never to choose anything.

  rows     the papers' models with their papers' architectures and settings, fixed in advance
           (not tuned here), trained on all 60,000 images for --epochs.
  select   vaelab's presets: each candidate setting of --preset is trained on the first 50,000
           training images and scored on the last 10,000 (the usual validation split), with
           --val-k samples; the best validation NLL is the preset's choice (select-PRESET.json).
  final    the chosen setting, retrained on all 60,000 images with each of --seeds, each run
           scored once on the test set; the table gives every seed and mean ± std over seeds.
  table    the tables of the README, from the JSON files the other commands wrote.

    export VAELAB_DATA=../shared/data
    python benchmarks/mnist_nll.py rows --models vae iwae50 vamp planar iaf hvae ladder \\
        --epochs 10 --out runs/nll
    python benchmarks/mnist_nll.py select --preset factorised --out runs/nll
    python benchmarks/mnist_nll.py final --preset factorised --seeds 0 1 2 --out runs/nll
    python benchmarks/mnist_nll.py table --out runs/nll

Each run uses --threads torch threads (default 1: under load, torch's default can run 100x
slower). Runs already trained join `rows` with --runs (their wall time is the sum of their
epochs' times in metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import vaelab
from vaelab.analysis.evaluate import evaluate
from vaelab.training.checkpoint import read_config
from vaelab.training.metrics import read_metrics
from vaelab.training.precision import choose_precision
from vaelab.training.runs import resolve_device

RESULTS = Path(__file__).parent / "results" / "mnist-nll"  # committed: runs are not
TEST_K = 5000  # Burda et al. (2015)
VAL_IMAGES = 10_000  # the last 10,000 of the 60,000 training images
BASE = {
    "model": {"model": "vae", "activation": "tanh", "likelihood": "bernoulli"},
    "data": {"dataset": "mnist", "val_fraction": 0.0, "binarize": True},
    "optim": {"lr": 1e-3},
    "train": {"batch_size": 100, "seed": 0},
}


@dataclass(frozen=True)
class Row:
    """A paper's model: vaelab's settings for it, and the figure the paper reports."""

    title: str
    model: dict[str, Any]
    paper: float | None
    source: str  # where the paper's figure comes from, and its schedule
    warmup: float = 0.0  # KL warm-up, as a share of the epochs


# The papers' architectures: tanh MLPs, Adam 1e-3, batch 100, constant learning rate.
ROWS: dict[str, Row] = {
    "vae": Row(
        "VAE",
        {"latent_dim": 50, "hidden_dims": [200, 200]},
        86.76,
        "Burda et al. 2015, table 1 (3,280 epochs)",
    ),
    "iwae50": Row(
        "IWAE, k = 50",
        {"latent_dim": 50, "hidden_dims": [200, 200], "objective": "iwae", "k": 50},
        84.78,
        "Burda et al. 2015, table 1 (3,280 epochs)",
    ),
    "iwae5": Row(
        "IWAE, k = 5",
        {"latent_dim": 50, "hidden_dims": [200, 200], "objective": "iwae", "k": 5},
        None,
        "Burda et al. 2015, table 1, report k = 1, 5 and 50; vaelab's table quotes k = 50",
    ),
    "vae300": Row(
        "VAE, the VampPrior row's networks",
        {"latent_dim": 40, "hidden_dims": [300, 300], "activation": "relu"},
        None,
        "the control for the VampPrior row: its encoder, decoder and schedule with N(0, I)",
        warmup=0.2,
    ),
    "vamp": Row(
        "VampPrior, K = 500",
        {
            "latent_dim": 40,
            "hidden_dims": [300, 300],
            "activation": "relu",
            "prior": "vamp",
            "pseudo_inputs": 500,
        },
        85.57,
        "Tomczak & Welling 2018, table 2, with gated units where this uses ReLU (pythae: 85.79)",
        warmup=0.2,
    ),
    "planar": Row(
        "planar flow, 10 steps",
        {"latent_dim": 40, "hidden_dims": [200, 200], "flow": "planar", "flow_steps": 10},
        85.10,
        "Rezende & Mohamed 2015, table 2, with 80 steps",
    ),
    "iaf": Row(
        "IAF, 2 steps",
        {"latent_dim": 50, "hidden_dims": [200, 200], "flow": "iaf", "flow_steps": 2},
        None,
        "Kingma et al. 2016 report MNIST for ResNet networks only",
    ),
    "hvae": Row(
        "two-layer IWAE, k = 5",
        {
            "model": "hvae",
            "latent_dims": [100, 50],
            "hidden_dims": [200, 200],
            "objective": "iwae",
            "k": 5,
        },
        82.90,
        "Burda et al. 2015, table 1, k = 50 (3,280 epochs)",
    ),
    "ladder": Row(
        "ladder VAE, 5 layers",
        {"model": "ladder", "latent_dims": [64, 32, 16, 8, 4], "hidden_dims": [512, 512]},
        81.74,
        "Sønderby et al. 2016, table 1, with batch norm and warm-up (about 2,000 epochs)",
        warmup=0.2,
    ),
}


@dataclass(frozen=True)
class Preset:
    """A vaelab preset: settings shared by its candidates, and the candidates compared on the
    validation split (each a set of overrides), each given the same training time: the epochs
    that fit it at the candidate's measured pace (`pace`). The final runs train for the epochs
    that fit --minutes at the chosen candidate's pace."""

    title: str
    shared: dict[str, dict[str, Any]]
    candidates: dict[str, dict[str, dict[str, Any]]]


COSINE = {"lr": 1e-3, "schedule": "cosine", "min_lr_ratio": 0.02}
WARMUP_SHARE = 1 / 3  # of a preset run's epochs: the KL weight reaches 1 in every run
HIERARCHY = {"latent_dims": [64, 32], "hidden_dims": [500, 500]}
# ReLU units: with tanh, a 500-500 ladder VAE and a VampPrior VAE stayed at the mean image
# (reconstruction about 207 nats for 79 epochs), as the IWAE-size tanh VAE does not
RELU = {"activation": "relu"}
VAMP = {"prior": "vamp", "pseudo_inputs": 500}
PRESETS: dict[str, Preset] = {
    "factorised": Preset(
        "best factorised decoder",
        {"optim": COSINE},
        {
            "hvae-vamp": {"model": {"model": "hvae", **HIERARCHY, **RELU, **VAMP}},
            "ladder-vamp": {"model": {"model": "ladder", **HIERARCHY, **RELU, **VAMP}},
            "ladder": {"model": {"model": "ladder", **HIERARCHY, **RELU}},
            "hvae-iwae5": {
                "model": {"model": "hvae", **HIERARCHY, **RELU, "objective": "iwae", "k": 5}
            },
        },
    ),
    "autoregressive": Preset(
        "best with an autoregressive decoder term",
        {"optim": COSINE, "train": {"amp": True}},
        {
            "vae-local": {
                "model": {"latent_dim": 50, "hidden_dims": [500, 500], "autoregressive": "local"}
            },
            "vae-gated2": {
                "model": {
                    "latent_dim": 50,
                    "hidden_dims": [500, 500],
                    "autoregressive": "gated",
                    "ar_layers": 2,
                }
            },
            "ladder-local": {"model": {"model": "ladder", **HIERARCHY, "autoregressive": "local"}},
            # added after the three above were scored (on validation only): the factorised
            # preset's choice with the local term
            "hvae-iwae5-local": {
                "model": {
                    "model": "hvae",
                    **HIERARCHY,
                    **RELU,
                    "objective": "iwae",
                    "k": 5,
                    "autoregressive": "local",
                }
            },
        },
    ),
}


def merged(*sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Config sections merged left to right, key by key within each section."""
    out: dict[str, dict[str, Any]] = {}
    for part in sections:
        for name, values in part.items():
            out[name] = {**out.get(name, {}), **values}
    return out


def row_config(row: Row, epochs: int, seed: int, *, device: str = "auto") -> vaelab.RunConfig:
    return vaelab.RunConfig.from_dict(
        merged(
            BASE,
            {"model": row.model, "train": {"epochs": epochs, "seed": seed, "device": device}},
            {"train": {"kl_warmup_epochs": row.warmup * epochs}},
        )
    )


def preset_config(
    preset: Preset,
    candidate: str,
    *,
    epochs: int,
    seed: int,
    validation: bool,
    device: str = "auto",
) -> vaelab.RunConfig:
    """The candidate's config: on the first 50,000 images with the last 10,000 held out for
    validation, or on all 60,000."""
    data = {"val_fraction": VAL_IMAGES / 60_000, "val_split": "last"} if validation else {}
    return vaelab.RunConfig.from_dict(
        merged(
            BASE,
            preset.shared,
            preset.candidates[candidate],
            {
                "data": data,
                "train": {
                    "epochs": epochs,
                    "seed": seed,
                    "kl_warmup_epochs": round(WARMUP_SHARE * epochs, 2),
                    "device": device,
                },
            },
        )
    )


def pace(config: vaelab.RunConfig, images: int, *, steps: int = 12) -> float:
    """Minutes an epoch of `images` takes this config here: the median time of `steps`
    optimisation steps on binary batches (after two to warm up), times the steps of an epoch.
    Measured in this process on the runs' device, so under the same load and threads as the
    runs it plans."""
    torch.manual_seed(0)
    device = resolve_device(config.train.device)
    model = vaelab.build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    batch = torch.bernoulli(torch.full((config.train.batch_size, 1, 28, 28), 0.13)).to(device)
    precision = choose_precision(config.train.amp, device)
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        with precision.autocast():
            loss = model.loss(batch).objective
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels, not only their launch
        times.append(time.perf_counter() - started)
    per_step = statistics.median(times[2:])
    return per_step * math.ceil(images / config.train.batch_size) / 60


def epochs_for(minutes: float, config: vaelab.RunConfig, images: int) -> tuple[int, float]:
    """The epochs of `config` that fit `minutes` here, and the measured minutes an epoch."""
    per_epoch = pace(config, images)
    return max(1, int(minutes / per_epoch)), per_epoch


def same_settings(run: Path, config: vaelab.RunConfig) -> bool:
    """Whether the run saved there was trained with `config` (the data folder aside, which
    training resolves and saves)."""
    saved = read_config(run / "last").to_dict()
    wanted = config.to_dict()
    saved["data"]["data_dir"] = wanted["data"]["data_dir"] = None
    return saved == wanted


def finished_epochs(run: Path) -> int:
    """The epochs of a run that finished its schedule (0 for none, or one cut short)."""
    if not (run / "last").is_dir():
        return 0
    epochs = len(read_metrics(run))
    return epochs if epochs == read_config(run / "last").train.epochs else 0


def train(config: vaelab.RunConfig, run: Path, *, retrain: bool) -> float:
    """Train the run, reuse it where it finished this config, or continue it from `last/`
    where it was cut short (unless `retrain`); its training minutes from metrics.jsonl."""
    saved = (run / "last").is_dir() and same_settings(run, config)
    if retrain or not saved:
        vaelab.train(config, run, force=True, progress=False)
    elif not finished_epochs(run):  # cut short: continue it
        vaelab.train(config, run, resume=True, progress=False)
    return sum(r.get("epoch_seconds", 0.0) for r in read_metrics(run)) / 60


def score(run: Path, x: torch.Tensor, *, k: int, device: str = "auto") -> dict[str, Any]:
    """The final weights (last/) scored once on `device`: NLL, its standard error over the
    images, the negative ELBO, active units and the model's own measures (KL per layer...)."""
    model = vaelab.load(run, checkpoint="last", device=resolve_device(device))
    if model.config.data_shape != tuple(x.shape[1:]):
        raise SystemExit(f"{run} was not trained on MNIST (shape {model.config.data_shape})")
    started = time.perf_counter()
    result = evaluate(model, x, k=k, binarize=True, seed=0)
    records = read_metrics(run)
    epoch_seconds = [r["epoch_seconds"] for r in records if "epoch_seconds" in r]
    return {
        "nll": result.nll,
        "nll_stderr": result.nll_stderr,
        "neg_elbo": result.neg_elbo,
        "active_units": result.active_units,
        "latent_dim": result.latent_dim,
        "measures": result.measures,
        "epochs": len(records),
        # a run paused or sharing the cores has slow epochs: epochs x the median is its pace
        "median_epoch_minutes": statistics.median(epoch_seconds) / 60 if epoch_seconds else None,
        "score_minutes": (time.perf_counter() - started) / 60,
        "k": k,
    }


def mnist(split: str) -> torch.Tensor:
    """The grey-level images of MNIST's official training or test set."""
    data = vaelab.load_data(vaelab.DataConfig(dataset="mnist", val_fraction=0.0), progress=False)
    return (data.train if split == "train" else data.test).x


def write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)  # whole or not at all: parallel processes read it


def read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def cmd_rows(args: argparse.Namespace) -> None:
    test_x = mnist("test")[: args.test_images]
    path = args.results / "rows.json"
    for name in args.models:
        for seed in args.seeds:
            row = ROWS[name]
            run = args.out / f"{name}-{args.epochs}-seed{seed}"
            config = row_config(row, args.epochs, seed, device=args.device)
            minutes = train(config, run, retrain=args.retrain)
            result = score(run, test_x, k=args.k, device=args.device)
            # read again just before writing: another process may have added its rows
            rows = {(r["row"], r["epochs_asked"], r["seed"]): r for r in read(path) or []}
            rows[(name, args.epochs, seed)] = {
                "row": name,
                "epochs_asked": args.epochs,
                "seed": seed,
                "train_minutes": minutes,
                **result,
            }
            print(f"{name} seed {seed}: test NLL {result['nll']:.2f} ({minutes:.1f} min)")
            write(path, list(rows.values()))


def cmd_select(args: argparse.Namespace) -> None:
    preset = PRESETS[args.preset]
    pool = mnist("train")
    val_x = pool[len(pool) - VAL_IMAGES :]  # what the runs held out (val_split "last")
    path = args.results / f"select-{args.preset}.json"
    settings = {"minutes": args.minutes, "val_k": args.val_k, "val_images": args.val_images}
    earlier = read(path) or {}
    # candidates of an earlier call join only if they were measured the same way
    results = earlier.get("candidates", {}) if earlier.get("settings") == settings else {}
    for name in args.candidates or list(preset.candidates):
        run = args.out / f"select-{args.preset}-{name}"
        probe = preset_config(preset, name, epochs=1, seed=0, validation=True, device=args.device)
        done = finished_epochs(run)  # a run an interrupted call finished: keep its length
        if done and same_settings(
            run,
            preset_config(preset, name, epochs=done, seed=0, validation=True, device=args.device),
        ):
            epochs, per_epoch = done, pace(probe, len(pool) - VAL_IMAGES)
        else:
            epochs, per_epoch = epochs_for(args.minutes, probe, len(pool) - VAL_IMAGES)
        epochs = args.epochs or epochs
        config = preset_config(
            preset, name, epochs=epochs, seed=0, validation=True, device=args.device
        )
        print(f"{args.preset}/{name}: {epochs} epochs ({per_epoch:.2f} min each)", flush=True)
        minutes = train(config, run, retrain=args.retrain)
        result = score(run, val_x[: args.val_images], k=args.val_k, device=args.device)
        results[name] = {
            "train_minutes": minutes,
            "pace_minutes": per_epoch,
            "kl_warmup_epochs": config.train.kl_warmup_epochs,
            **result,
        }
        print(f"{args.preset}/{name}: validation NLL {result['nll']:.2f} ({minutes:.1f} min)")
        latest = read(path) or {}  # another process may have scored its candidates meanwhile
        if latest.get("settings") == settings:
            results = latest["candidates"] | {name: results[name]}
        chosen = min(results, key=lambda n: results[n]["nll"])
        write(
            path,
            {"preset": args.preset, "settings": settings, "candidates": results, "chosen": chosen},
        )
    print(f"chosen on validation so far: {chosen}")


def cmd_final(args: argparse.Namespace) -> None:
    preset = PRESETS[args.preset]
    selection = read(args.results / f"select-{args.preset}.json")
    if selection is None:
        raise SystemExit(f"run `select --preset {args.preset}` first: the choice is made there")
    chosen = selection["chosen"]
    test_x = mnist("test")[: args.test_images]
    path = args.results / f"final-{args.preset}.json"
    found = read(path) or {"runs": {}}
    if found.get("chosen") == chosen and not args.epochs:
        epochs = found["epochs"]  # every seed trains as long as the first
    else:
        probe = preset_config(
            preset, chosen, epochs=1, seed=0, validation=False, device=args.device
        )
        epochs, per_epoch = epochs_for(args.minutes, probe, 60_000)
        epochs = args.epochs or epochs
        found = {"runs": {}, "chosen": chosen, "epochs": epochs, "pace_minutes": per_epoch}
        write(path, found)  # written now, so that seeds started meanwhile train as long
    print(f"{args.preset}: {chosen}, {epochs} epochs", flush=True)
    for seed in args.seeds:
        config = preset_config(
            preset, chosen, epochs=epochs, seed=seed, validation=False, device=args.device
        )
        run = args.out / f"final-{args.preset}-{chosen}-seed{seed}"
        minutes = train(config, run, retrain=args.retrain)
        result = score(run, test_x, k=args.k, device=args.device)
        found = read(path) or found  # another process may have added its seeds
        found["runs"][str(seed)] = {"train_minutes": minutes, **result}
        found.update(preset=args.preset, config=config.to_dict())
        print(f"{args.preset}/{chosen} seed {seed}: test NLL {result['nll']:.2f}")
        write(path, found)


def spread(values: list[float], digits: int = 2) -> str:
    """mean ± std over seeds (n - 1), or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def training_minutes(run: dict[str, Any]) -> float:
    """A scored run's training time at its pace: epochs x the median epoch (the sum of its
    epochs' times where the median was not kept)."""
    median = run.get("median_epoch_minutes")
    return run["epochs"] * median if median else run["train_minutes"]


def nll_cell(runs: list[dict[str, Any]]) -> str:
    """One run's NLL with its standard error over the test images, or the mean ± std over
    the seeds' runs (the spread of training, which is what tells rows apart)."""
    if len(runs) == 1:
        return f"{runs[0]['nll']:.2f} (s.e. {runs[0]['nll_stderr']:.2f})"
    return spread([r["nll"] for r in runs]) + " (seeds)"


def cmd_table(args: argparse.Namespace) -> None:
    rows = read(args.results / "rows.json") or []
    print(
        "| model | epochs | training, min (epochs × median epoch) | test −ELBO | "
        "test NLL, k = 5000 | seeds | active units | paper's NLL |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["row"], r["epochs_asked"]), []).append(r)
    for (name, epochs), runs in groups.items():
        row = ROWS[name]
        paper = f"{row.paper:.2f} ({row.source})" if row.paper else f"– ({row.source})"
        print(
            f"| {row.title} | {epochs} | {spread([training_minutes(r) for r in runs], 1)} | "
            f"{spread([r['neg_elbo'] for r in runs])} | {nll_cell(runs)} | "
            f"{len(runs)} | {spread([r['active_units'] for r in runs], 0)} of "
            f"{runs[0]['latent_dim']} | {paper} |"
        )
    for name in PRESETS:
        selection = read(args.results / f"select-{name}.json")
        final = read(args.results / f"final-{name}.json")
        if selection is None:
            continue
        print(
            f"\n{PRESETS[name].title}: candidates on the validation split "
            f"({selection['settings']['minutes']:g} min each, k = "
            f"{selection['settings']['val_k']}):"
        )
        for candidate, r in selection["candidates"].items():
            mark = " (chosen)" if candidate == selection["chosen"] else ""
            print(
                f"  {candidate}: {r['nll']:.2f}{mark}, {r['epochs']} epochs "
                f"(KL warm-up {r['kl_warmup_epochs']:g}), {r['train_minutes']:.1f} min"
            )
        if final and not final["runs"]:
            print(f"  test, retrained on 60,000 ({final['epochs']} epochs): no seed scored yet")
        elif final:
            runs = list(final["runs"].values())
            print(
                f"  test, retrained on 60,000 ({final['epochs']} epochs): NLL "
                f"{nll_cell(runs)} over {len(runs)} seed(s) "
                f"({', '.join(format(r['nll'], '.2f') for r in runs)}), "
                f"{spread([training_minutes(r) for r in runs])} min (epochs x median epoch)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], None]] = {
        "rows": cmd_rows,
        "select": cmd_select,
        "final": cmd_final,
        "table": cmd_table,
    }
    for name in handlers:
        sub = commands.add_parser(name)
        sub.add_argument(
            "--out", type=Path, default=Path("runs/nll"), help="the runs' folders (checkpoints)"
        )
        sub.add_argument(
            "--results",
            type=Path,
            default=RESULTS,
            help="the JSON files of scores, kept with the code (default: %(default)s)",
        )
        sub.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
        if name == "table":
            continue
        sub.add_argument("--retrain", action="store_true", help="train again runs already there")
        sub.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default="auto",
            help="where runs train and are scored (default: auto, CUDA when available)",
        )
        sub.add_argument("--epochs", type=int, default=None)
        if name == "rows":
            sub.add_argument("--models", nargs="+", choices=tuple(ROWS), default=list(ROWS))
            sub.add_argument("--seeds", type=int, nargs="+", default=[0])
        else:
            sub.add_argument("--preset", choices=tuple(PRESETS), required=True)
        if name == "select":
            sub.add_argument("--candidates", nargs="+")
            sub.add_argument(
                "--minutes", type=float, default=12.0, help="each candidate's training time"
            )
            sub.add_argument("--val-k", type=int, default=1000)
            sub.add_argument("--val-images", type=int, default=VAL_IMAGES)
        else:
            sub.add_argument("--k", type=int, default=TEST_K)
            sub.add_argument("--test-images", type=int, default=10_000)
        if name == "final":
            sub.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            sub.add_argument(
                "--minutes",
                type=float,
                default=60.0,
                help="training budget: the epochs that fit it at the pace measured before the "
                "first seed (later seeds train as many)",
            )
    args = parser.parse_args()
    if args.command == "rows" and args.epochs is None:
        args.epochs = 10
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    handlers[args.command](args)


if __name__ == "__main__":
    main()
