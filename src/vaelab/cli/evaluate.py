"""`vaelab eval`: measure a trained run on one split, print a table and keep it in eval.json."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelab.analysis.evaluate import (
    ACTIVE_THRESHOLD,
    DEFAULT_CHUNK,
    DEFAULT_K,
    EvalResult,
    evaluate,
)
from vaelab.analysis.labels import DEFAULT_PER_CLASS as FIDELITY_SAMPLES
from vaelab.analysis.labels import fidelity_record
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    parse_positive,
    show_progress,
)
from vaelab.cli.evaluate_conditional import conditional_lines, elbo_note, nll_label, nll_note
from vaelab.cli.evaluate_runs import summary, summary_table
from vaelab.data import DataSplits
from vaelab.errors import VaelabError, plural
from vaelab.files import atomic_write_text, write_error
from vaelab.runs import TrainedRun, check_run, open_run
from vaelab.training.precision import FP32
from vaelab.training.runs import EVAL_FILE
from vaelab.version import __version__

logger = logging.getLogger(__name__)


def evaluate_run(
    run: Path,
    *,
    split: str | None = None,
    k: int,
    chunk: int,
    seed: int = 0,
    checkpoint: str | None = None,
    device: str = "auto",
    binarize: bool | None = None,
    limit: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
    amp: bool = False,
    fidelity: bool = False,
    fidelity_samples: int = FIDELITY_SAMPLES,
) -> tuple[EvalResult, dict[str, Any], Path]:
    """Evaluate a run's checkpoint on a split and keep the record in the run's eval.json;
    returns (result, the record, eval.json's path). See `measure_run`. `checkpoint` None
    picks `scored_checkpoint`'s: best/ with a validation split, else last/."""
    if limit is not None and limit <= 0:
        raise VaelabError(f"--limit must be positive, got {limit}")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    path = trained.run_dir / EVAL_FILE
    check_writable(path)  # before the long pass, not after it
    result, record, key = measure_run(
        trained,
        split=split,
        k=k,
        chunk=chunk,
        seed=seed,
        binarize=binarize,
        limit=limit,
        dataset=dataset,
        data_dir=data_dir,
        progress=progress,
        amp=amp,
        fidelity=fidelity,
        fidelity_samples=fidelity_samples,
    )
    save_record(path, key, record)
    return result, record, path


def measure_run(
    trained: TrainedRun,
    *,
    split: str | None = None,
    k: int,
    chunk: int,
    seed: int = 0,
    binarize: bool | None = None,
    limit: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    data: DataSplits | None = None,
    progress: bool = False,
    amp: bool = False,
    fidelity: bool = False,
    fidelity_samples: int = FIDELITY_SAMPLES,
) -> tuple[EvalResult, dict[str, Any], str]:
    """Evaluate an opened run on a split; returns (result, its eval.json record, its key).

    The run's dataset is loaded (from `dataset` / `data_dir` where given) unless `data` is
    it, already loaded. `binarize` None follows the run: a run trained with dynamic
    binarisation is scored on a fixed Bernoulli draw of the split (seeded by `seed`), as in
    Burda et al. (2015). `amp`: bfloat16 networks (see `evaluate`); its record has its own
    key, beside the fp32 one. A conditional run is scored with the split's labels (see
    `evaluate`); `fidelity` adds, for a label-conditional one, the label fidelity of
    `fidelity_samples` samples per class (`fidelity_record`, seeded by `seed`).
    """
    if data is None:
        data = trained.load_data(dataset, data_dir)
    chosen = trained.split_of(data, split)
    if limit is not None and limit > len(chosen):
        logger.info(
            "--limit %d is more than the %s split's %s; using them all",
            limit,
            chosen.split,
            plural(len(chosen), "image"),
        )
    x = chosen.x if limit is None else chosen.x[:limit]
    y = None if chosen.y is None else chosen.y[: len(x)]
    likelihood = trained.config.model.likelihood
    if binarize is None:
        binarize = trained.config.data.binarize
    if binarize and likelihood != "bernoulli":
        raise VaelabError(
            f"--binarize applies to a bernoulli likelihood; this run's is {likelihood}"
        )
    if likelihood == "bernoulli" and not binarize and not bool(((x == 0) | (x == 1)).all()):
        logger.warning(
            "the images are not binary, so a bernoulli decoder's NLL is a cross-entropy, "
            "not a log-likelihood; --binarize scores a binary draw"
        )
    result = evaluate(
        trained.model,
        x,
        y=y if trained.model.conditional else None,
        k=k,
        chunk=chunk,
        seed=seed,
        binarize=binarize,
        progress=progress,
        amp=amp,
    )
    record = {
        "checkpoint": trained.checkpoint_name,
        "split": chosen.split,
        "dataset": chosen.dataset,
        "chunk": chunk,
        "device": str(trained.model.device),
        "vaelab": __version__,
        **result.to_dict(),
    }
    if fidelity:
        fidelities = fidelity_record(
            trained,
            data,
            per_class=fidelity_samples,
            seed=seed,
            dataset=dataset,
            data_dir=data_dir,
        )
        if fidelities is not None:
            record["label_fidelity"] = fidelities
    key = f"{trained.checkpoint_name}/{chosen.split}"
    key += f"/k={result.k}" if result.k is not None else ""  # 1 for a point-mass posterior
    if len(x) < len(chosen):
        key += f"/first-{len(x)}"
    if result.precision != FP32:
        key += f"/{result.precision}"
    return result, record, key


def check_writable(path: Path) -> None:
    # A bundle's outputs folder is made on its first write: then its parent must be writable.
    folder = path.parent if path.parent.exists() else path.parent.parent
    probe = folder / f".{EVAL_FILE}.probe"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise write_error(path, error) from None


def save_record(path: Path, key: str, record: dict[str, Any]) -> None:
    """Add `record` under `key` to eval.json, keeping the other records. An eval.json that
    cannot be read is moved aside to eval.json.bak, never overwritten."""
    records: Any = {}
    if path.exists():
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            records = None
        if not isinstance(records, dict):
            backup = path.with_name(f"{path.name}.bak")
            path.replace(backup)
            logger.warning("%s was not an eval.json vaelab can read; moved it to %s", path, backup)
            records = {}
    records[key] = record
    atomic_write_text(path, json.dumps(records, indent=2) + "\n")


def format_result(result: EvalResult, record: dict[str, Any], run: Path) -> str:
    """The table `vaelab eval` prints."""
    drawn = f", binarised (seed {result.seed})" if result.binarized else ""
    networks = ", bfloat16 networks" if result.precision != FP32 else ""
    condition = f", conditioned on {result.condition}" if result.condition else ""
    lines = [
        f"{run} ({record['checkpoint']} checkpoint), {record['split']} split of "
        f"{record['dataset']}: {plural(result.examples, 'image')}{drawn}{networks}{condition}"
    ]
    if result.nll is None:  # ae / dae
        lines += [
            f"  reconstruction NLL   {result.recon:10.3f} nats per image",
            f"  reconstruction MSE   {result.mse:10.5f} per pixel",
            "  (a deterministic autoencoder has no ELBO, likelihood or active units)",
        ]
        return "\n".join(lines)
    if result.point_posterior:
        return "\n".join(lines + _point_posterior_lines(result))
    # Each value labelled with its dimension (z1 is the first), the ten largest first.
    ranked = sorted(enumerate(result.kl_per_dim or [], start=1), key=lambda p: -p[1])
    shown = " ".join(f"z{d}={v:.2f}" for d, v in ranked[:10]) + (" ..." if len(ranked) > 10 else "")
    lines += [
        f"  negative ELBO        {result.neg_elbo:10.3f} nats   (reconstruction "
        f"{result.recon:.3f} + KL {result.kl:.3f}{elbo_note(result)})",
        f"  {nll_label(result)} {result.nll:10.3f} nats   ({nll_note(result)}± "
        f"{result.nll_stderr or 0:.3f} standard error; {result.nll_bits_per_dim:.4f} bits/dim)",
        f"  active units         {result.active_units!s:>10} of {result.latent_dim}   "
        f"(Cov_x E_q[z_u] > {ACTIVE_THRESHOLD})"
        if result.active_units is not None
        else "  active units                n/a   (needs two images or more)",
        f"  KL per dimension     {shown}   (nats, largest first)"
        if result.kl_per_dim is not None
        else "  KL per dimension            n/a   (no closed form: the KL is a Monte Carlo "
        "estimate)",
        f"  reconstruction MSE   {result.mse:10.5f} per pixel (decoded posterior mean)",
        f"  throughput           {result.images_per_second:10.1f} images/s   "
        f"({result.images_per_second * result.k / 1e6:.2f}M decoded samples/s; "
        f"{result.seconds:.1f} s in all)",
        *conditional_lines(result, record),
    ]
    if result.prior not in (None, "N(0, I)") and not result.condition:
        lines.append(f"  prior                {result.prior}")
    lines += _measure_lines(result.measures)
    return "\n".join(lines)


def _measure_lines(measures: dict[str, float] | None) -> list[str]:
    """A model's own measures (a hierarchy's KL and active units per layer), a line each."""
    return [
        f"  {name.replace('_', ' '):<20} "
        + (f"{int(value):>10}" if name.startswith("active_units") else f"{value:10.4f}")
        for name, value in (measures or {}).items()
    ]


def _point_posterior_lines(result: EvalResult) -> list[str]:
    """A VQ-VAE's table: its bound, the prior it is computed under, and the model's measures."""
    lines = [
        f"  bound on -log p(x)   {result.nll:10.3f} nats   (reconstruction {result.recon:.3f} "
        f"+ code {result.kl:.3f}; {result.nll_bits_per_dim:.4f} bits/dim; ± "
        f"{result.nll_stderr or 0:.3f} standard error)",
        f"  prior                {result.prior}",
    ]
    lines += _measure_lines(result.measures)
    lines += [
        f"  reconstruction MSE   {result.mse:10.5f} per pixel (decoded code)",
        f"  throughput           {result.images_per_second:10.1f} images/s ({result.seconds:.1f} "
        "s in all)",
        "  (the posterior is a point mass on the codes, so the bound is the ELBO, -log p(x|z_q) "
        "- log p(z_q), the same for every k; a VAE's NLL is an importance-weighted bound that "
        "tightens with k: both bound -log p(x) from above, and lower is better)",
    ]
    return lines


def add_parsers(subparsers: Any) -> None:
    """The `eval` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="a run's bound on -log p(x) (ELBO, importance-weighted NLL) and more",
        description="Measure a run the way papers report VAEs, on its test split by default: "
        "the negative ELBO (reconstruction + KL), the importance-weighted estimate of -log p(x) "
        "with k samples (Burda et al. 2015), active units, KL per latent dimension and the "
        "reconstruction error; for a vqvae, the bound -log p(x|z_q) - log p(z_q) under its "
        "prior (exact in k), codebook usage and perplexity. A conditional run is scored on what "
        "it models: a cvae on -log p(x|y) with the split's labels (-log p(x_unobserved | "
        "x_observed) with --observe), an m2 on -log p(x) with y marginalised and by its "
        "classifier's accuracy; the label fidelity of a cvae's or an m2's samples is measured "
        "with the dataset's cached classifier. Prints a table and keeps it in RUN/eval.json; "
        "with several runs, also each measure's mean and standard deviation over them.",
    )
    parser.add_argument(
        "run", metavar="RUN", nargs="+", help=RUN_PATH + "; several are compared side by side"
    )
    parser.add_argument(
        "--k",
        type=parse_positive,
        default=DEFAULT_K,
        help=f"importance samples per image (default: {DEFAULT_K})",
    )
    parser.add_argument(
        "--chunk",
        type=parse_positive,
        default=DEFAULT_CHUNK,
        help="at most this many (image, sample) pairs per decoder pass; bounds memory, not the "
        f"result (default: {DEFAULT_CHUNK})",
    )
    parser.add_argument(
        "--limit",
        type=parse_positive,
        metavar="N",
        help="only the first N images of the split (with --disentanglement: a random N, drawn "
        "with --seed)",
    )
    parser.add_argument(
        "--binarize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score a fixed Bernoulli draw of the images (default: when the run was trained "
        "with --binarize)",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        device=f"{MODEL_DEVICE} (default: auto)",
        seed="seed of the samples and the binarisation (default: 0)",
        split=True,
        dataset=RUN_DATASET,
        data_dir=RUN_DATA_DIR,
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 networks with fp32 samples and log-weights, where the device has native "
        "bfloat16 (a CPU with AVX512-BF16 or AMX, or CUDA); its NLL was within 0.005 nats of "
        "fp32 on the README's MNIST models (kept in eval.json under its own key)",
    )
    parser.add_argument(
        "--disentanglement",
        action="store_true",
        help="instead of the likelihood: score the posterior means on data with known factors "
        "(--dataset shapes) with MIG, DCI, SAP and the FactorVAE score, each printed with its "
        "definition, sample sizes and seed (--limit N: a random sample of N images of the "
        "split, drawn with --seed)",
    )
    parser.add_argument(
        "--no-fidelity",
        action="store_true",
        help="skip the label fidelity of a cvae's or an m2's samples (which trains the "
        "dataset's classifier on its first use, about a minute for MNIST on a CPU)",
    )
    parser.add_argument(
        "--fidelity-samples",
        type=parse_positive,
        default=FIDELITY_SAMPLES,
        metavar="N",
        help=f"samples drawn per class for the label fidelity (default: {FIDELITY_SAMPLES})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet(parser)


def _eval(args: argparse.Namespace) -> Iterator[str | Path]:
    runs = [Path(run) for run in args.run]
    if args.disentanglement:
        from vaelab.cli.evaluate_factors import disentanglement_command

        for run in runs:
            yield from disentanglement_command(argparse.Namespace(**{**vars(args), "run": run}))
        return
    for run in runs:
        check_run(run)  # a mistyped path fails before the long passes over the others
    records = []
    for run in runs:
        try:
            result, record, path = _evaluate_one(run, args)
        except VaelabError as error:
            if len(runs) == 1 or str(run) in str(error):
                raise
            raise VaelabError(f"{run}: {error}") from None
        records.append(record)
        if args.json:
            continue
        if not args.quiet:
            yield format_result(result, record, run)
        yield path
    if args.json:
        if len(runs) == 1:
            yield json.dumps(records[0], indent=2)
            return
        listed = [{"run": str(run), **record} for run, record in zip(runs, records, strict=True)]
        yield json.dumps({"runs": listed, "summary": summary(runs, records)}, indent=2)
    elif len(runs) > 1 and not args.quiet:
        yield summary_table(runs, records)


def _evaluate_one(run: Path, args: argparse.Namespace) -> tuple[EvalResult, dict[str, Any], Path]:
    return evaluate_run(
        run,
        split=args.split,
        k=args.k,
        chunk=args.chunk,
        seed=args.seed,
        checkpoint=args.checkpoint,
        device=args.device,
        binarize=args.binarize,
        limit=args.limit,
        dataset=args.dataset,
        data_dir=args.data_dir,
        progress=show_progress(args),
        amp=args.amp,
        fidelity=not args.no_fidelity,
        fidelity_samples=args.fidelity_samples,
    )


COMMANDS = {"eval": _eval}
