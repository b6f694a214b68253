"""`vaelab eval --disentanglement`: score a run's codes against its data's known factors with
MIG, DCI, SAP and the FactorVAE score, print them and keep them in eval.json."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelab.cli.evaluate import check_writable, save_record
from vaelab.disentanglement.evaluate import (
    DisentanglementResult,
    evaluate_disentanglement,
    format_disentanglement,
    sample_rows,
)
from vaelab.errors import VaelabError, plural
from vaelab.runs import open_run
from vaelab.training.runs import EVAL_FILE
from vaelab.version import __version__


def disentanglement_run(
    run: Path,
    *,
    split: str | None = None,
    seed: int = 0,
    checkpoint: str | None = None,
    device: str = "auto",
    limit: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> tuple[DisentanglementResult, dict[str, Any], Path]:
    """Score a run's codes of a split with known factors on MIG, DCI, SAP and the FactorVAE
    score; keep the record in eval.json under `CHECKPOINT/SPLIT/disentanglement`."""
    if limit is not None and limit <= 0:
        raise VaelabError(f"--limit must be positive, got {limit}")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    path = trained.run_dir / EVAL_FILE
    check_writable(path)
    chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
    if chosen.factors is None or chosen.factor_info is None:
        raise VaelabError(
            f"--disentanglement needs data with known factors (--dataset shapes, or an .npz "
            f"file with a 'factors' array); {chosen.dataset} has none"
        )
    rows = sample_rows(len(chosen), limit, seed=seed)  # a seeded sample, not the first N
    result = evaluate_disentanglement(
        trained.model,
        chosen.x[rows],
        chosen.factors[rows],
        chosen.factor_info,
        seed=seed,
    )
    record = {
        "checkpoint": trained.checkpoint_name,
        "split": chosen.split,
        "dataset": chosen.dataset,
        "vaelab": __version__,
        **result.to_dict(),
    }
    key = f"{trained.checkpoint_name}/{chosen.split}/disentanglement"
    if len(rows) < len(chosen):
        key += f"/sample-{len(rows)}"
    if seed:
        key += f"/seed={seed}"
    save_record(path, key, record)
    return result, record, path


def disentanglement_command(args: argparse.Namespace) -> Iterator[str | Path]:
    """`vaelab eval --disentanglement`: print the metrics' table (or the JSON record) and the
    path of eval.json."""
    if args.amp:
        raise VaelabError("--amp applies to the likelihood, not to --disentanglement")
    result, record, path = disentanglement_run(
        Path(args.run),
        split=args.split,
        seed=args.seed,
        checkpoint=args.checkpoint,
        device=args.device,
        limit=args.limit,
        dataset=args.dataset,
        data_dir=args.data_dir,
    )
    if args.json:
        yield json.dumps(record, indent=2)
        return
    if not args.quiet:
        header = (
            f"{args.run} ({record['checkpoint']} checkpoint), {record['split']} split of "
            f"{record['dataset']}: {plural(result.examples, 'image')}"
        )
        yield "\n".join([header, *format_disentanglement(result)])
    yield path
