"""`vaelab eval`: measure a trained run on one split, print a table and keep it in eval.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vaelab import __version__
from vaelab.analysis.evaluate import ACTIVE_THRESHOLD, EvalResult, evaluate
from vaelab.errors import VaelabError, plural
from vaelab.figure_commands import choose_split, load_trained, run_folder
from vaelab.files import atomic_write_text
from vaelab.training.checkpoint import resolve_checkpoint
from vaelab.training.runs import EVAL_FILE, load_run_data

logger = logging.getLogger(__name__)


def evaluate_run(
    run: Path, *, split: str | None = None, k: int, chunk: int, seed: int = 0,
    checkpoint: str = "best", device: str = "auto", binarize: bool | None = None,
    limit: int | None = None, dataset: str | None = None, data_dir: str | None = None,
    progress: bool = False,
) -> tuple[EvalResult, dict[str, Any], Path]:  # fmt: skip
    """Evaluate a run's checkpoint on a split; returns (result, its eval.json record, path).

    `binarize` None follows the run: a run trained with dynamic binarisation is scored on a
    fixed Bernoulli draw of the split (seeded by `seed`), as in Burda et al. (2015).
    """
    if limit is not None and limit <= 0:
        raise VaelabError(f"--limit must be positive, got {limit}")
    trained = load_trained(run, checkpoint, device)
    folder = resolve_checkpoint(run, prefer=checkpoint)  # a run's best/, or the folder given
    checkpoint_name = folder.name.strip(".").removesuffix(".old")
    path = run_folder(run) / EVAL_FILE
    _check_writable(path)  # before the long pass, not after it
    data = load_run_data(trained.config, dataset, data_dir)
    split_name, chosen = choose_split(data, split)
    if limit is not None and limit > len(chosen):
        logger.info("--limit %d is more than the %s split's %s; using them all", limit,
                    split_name, plural(len(chosen), "image"))  # fmt: skip
    x = chosen.x if limit is None else chosen.x[:limit]
    if binarize is None:
        binarize = trained.config.train.binarize
    if binarize and trained.config.model.likelihood != "bernoulli":
        raise VaelabError("--binarize applies to a bernoulli likelihood; this run's is "
                          f"{trained.config.model.likelihood}")  # fmt: skip
    bernoulli = trained.config.model.likelihood == "bernoulli"
    if bernoulli and not binarize and not bool(((x == 0) | (x == 1)).all()):
        logger.warning(
            "note: the images are not binary, so a bernoulli decoder's NLL is a cross-entropy, "
            "not a log-likelihood; --binarize scores a binary draw"
        )
    result = evaluate(trained.model, x, k=k, chunk=chunk, seed=seed, binarize=binarize,
                      progress=progress)  # fmt: skip
    record = {"checkpoint": checkpoint_name, "split": split_name, "dataset": data.name,
              "chunk": chunk, "device": str(trained.model.device), "vaelab": __version__,
              **result.to_dict()}  # fmt: skip
    key = f"{checkpoint_name}/{split_name}" + (f"/k={k}" if result.k is not None else "")
    if len(x) < len(chosen):
        key += f"/first-{len(x)}"
    _save(path, key, record)
    return result, record, path


def _check_writable(path: Path) -> None:
    folder = path.parent
    probe = folder / f".{EVAL_FILE}.probe"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise VaelabError(f"cannot write {path}: {error.strerror or error}") from None


def _save(path: Path, key: str, record: dict[str, Any]) -> None:
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
            logger.warning("%s was not an eval.json vaelab can read; moved it to %s", path,
                           backup)  # fmt: skip
            records = {}
    records[key] = record
    atomic_write_text(path, json.dumps(records, indent=2) + "\n")


def format_result(result: EvalResult, record: dict[str, Any], run: Path) -> str:
    """The table `vaelab eval` prints."""
    drawn = f", binarised (seed {result.seed})" if result.binarized else ""
    lines = [
        f"{run} ({record['checkpoint']} checkpoint), {record['split']} split of "
        f"{record['dataset']}: {plural(result.examples, 'image')}{drawn}"
    ]
    if result.nll is None:  # ae / dae
        lines += [
            f"  reconstruction NLL   {result.recon:10.3f} nats per image",
            f"  reconstruction MSE   {result.mse:10.5f} per pixel",
            "  (a deterministic autoencoder has no ELBO, likelihood or active units)",
        ]
        return "\n".join(lines)
    kl_per_dim = sorted(result.kl_per_dim or [], reverse=True)
    shown = " ".join(f"{v:.2f}" for v in kl_per_dim[:10]) + (" ..." if len(kl_per_dim) > 10 else "")
    lines += [
        f"  negative ELBO        {result.neg_elbo:10.3f} nats   (reconstruction "
        f"{result.recon:.3f} + KL {result.kl:.3f})",
        f"  NLL, k={result.k:<13} {result.nll:10.3f} nats   (± {result.nll_stderr or 0:.3f} "
        f"standard error; {result.nll_bits_per_dim:.4f} bits/dim)",
        f"  active units         {result.active_units!s:>10} of {result.latent_dim}   "
        f"(Cov_x E_q[z_u] > {ACTIVE_THRESHOLD})"
        if result.active_units is not None
        else "  active units                n/a   (needs two images or more)",
        f"  KL per dimension     {shown}   (nats, largest first)",
        f"  reconstruction MSE   {result.mse:10.5f} per pixel (decoded posterior mean)",
        f"  throughput           {result.images_per_second:10.1f} images/s   "
        f"({result.images_per_second * result.k / 1e6:.2f}M decoded samples/s; "
        f"{result.seconds:.1f} s in all)",
    ]
    return "\n".join(lines)
