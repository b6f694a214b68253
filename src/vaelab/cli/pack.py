"""`vaelab pack`: a run as one shareable folder or .zip, laid out as a Hugging Face model
repository (see `vaelab.bundles` for the layout and how it is read back)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vaelab.analysis.evaluate import DEFAULT_CHUNK
from vaelab.bundles import BUNDLE_FILE, CARD_FILE, FORMAT, FORMAT_VERSION, describe_files, is_bundle
from vaelab.cli.arguments import (
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    parse_positive,
    show_progress,
)
from vaelab.cli.evaluate import measure_run
from vaelab.cli.export import ONNX_DIR, run_data, write_export
from vaelab.cli.run_images import (
    RECONSTRUCTIONS_PNG,
    SAMPLES_PNG,
    prior_samples,
    save_grid,
    save_reconstructions,
    save_samples,
)
from vaelab.data import DataSplits
from vaelab.errors import VaelabError
from vaelab.export.model_card import model_card
from vaelab.export.onnx_files import require_export_dependencies
from vaelab.files import atomic_folder, atomic_path, check_folder_of, check_replaceable, write_error
from vaelab.models.networks import count_parameters, prior_parameters
from vaelab.runs import SPLIT_ORDER, TrainedRun, open_run, split_to_use
from vaelab.training.checkpoint import CONFIG_FILE, META_FILE, WEIGHTS_FILE, resolve_checkpoint
from vaelab.training.code_prior import PRIOR_FOLDER, find_prior, fitted_to, load_prior
from vaelab.training.metrics import METRICS_FILE
from vaelab.training.precision import FP32
from vaelab.training.runs import EVAL_FILE
from vaelab.version import __version__

logger = logging.getLogger(__name__)

DEFAULT_K = 1000  # importance samples per image of the evaluation packed with the model
SAMPLES = 64


def _is_bundle_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(Path(name).name == BUNDLE_FILE for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_output(out: Path) -> None:
    """A one-line error, before any work, unless `out` can take a bundle: a new path, an
    empty folder, or an earlier bundle (which is replaced)."""
    if out.suffix.lower() == ".zip":
        if out.exists() and not (out.is_file() and _is_bundle_zip(out)):
            raise VaelabError(f"{out} already exists and is not a bundle; choose another OUT")
        check_folder_of(out)
        return
    check_replaceable(out, replace_if=is_bundle, flag="OUT")


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A folder to fill; on success it becomes `out`, a folder or (for .zip) an archive of its
    files. On any failure nothing is left at `out` (an earlier bundle there stays)."""
    if out.suffix.lower() != ".zip":
        with atomic_folder(out, replace_if=is_bundle) as folder:
            yield folder
        return
    with tempfile.TemporaryDirectory(prefix="vaelab-pack-") as staging:
        folder = Path(staging) / out.stem
        folder.mkdir()
        yield folder
        try:
            with (
                atomic_path(out, suffix=".zip") as tmp,
                zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            ):
                for file in sorted(folder.rglob("*")):
                    if file.is_file():
                        archive.write(file, f"{out.stem}/{file.relative_to(folder).as_posix()}")
        except OSError as error:
            raise write_error(out, error) from None


def _run_evaluation(trained: TrainedRun) -> dict[str, Any]:
    """The run's eval.json records of the packed checkpoint: those it was trained or packed
    with, then those written since (a bundle's are in its outputs folder)."""
    records: dict[str, Any] = {}
    for folder in dict.fromkeys([trained.records_dir, trained.run_dir]):
        try:
            found = json.loads((folder / EVAL_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            records.update(
                (key, record)
                for key, record in found.items()
                if isinstance(record, dict) and record.get("checkpoint") == trained.checkpoint_name
            )
    return records


def _shown_record(records: dict[str, Any], split: str) -> dict[str, Any] | None:
    """The record the card shows: the whole split's, in fp32 (not `eval --amp`'s), with the
    most importance samples."""
    whole = [
        record
        for key, record in records.items()
        if record.get("split") == split
        and "/first-" not in key
        and record.get("precision", FP32) == FP32
    ]
    return max(whole, key=lambda record: record.get("k") or 0, default=None)


def pack_run(
    run: str | Path,
    out: str | Path,
    *,
    checkpoint: str | None = None,
    k: int = DEFAULT_K,
    evaluate: bool = True,
    onnx: bool = True,
    seed: int = 0,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> Path:
    """Write the bundle `out` (a folder, or a .zip) of a run's checkpoint; see the module doc.

    The bundle gets the run's evaluation records of that checkpoint; unless one covers the
    whole test split, `evaluate` scores it there with `k` importance samples per image.
    """
    out = Path(out)
    if onnx:
        require_export_dependencies()
    check_output(out)
    trained = open_run(run, checkpoint=checkpoint, device="cpu")
    data = run_data(trained, dataset=dataset, data_dir=data_dir)
    name = out.stem if out.suffix.lower() == ".zip" else out.name
    with _staging(out) as folder:
        _copy_checkpoint(trained, folder)
        listed = [CONFIG_FILE, WEIGHTS_FILE, META_FILE, *_copy_prior(trained, folder)]
        sidecar = None
        if onnx:
            done = write_export(trained, folder / ONNX_DIR, data, seed=seed)
            sidecar = done.sidecar
            listed += [file.relative_to(folder).as_posix() for file in done.files]
        _describe(folder, listed, trained.checkpoint_name)
        records = _run_evaluation(trained)
        split = "test" if data is None else split_to_use(data)
        if evaluate and data is not None and _shown_record(records, split) is None:
            _, record, key = measure_run(
                trained,
                split=split,
                k=k,
                chunk=DEFAULT_CHUNK,
                seed=seed,
                data=data,
                progress=progress,
            )
            records[key] = record
        if records:
            (folder / EVAL_FILE).write_text(json.dumps(records, indent=2) + "\n")
        figure = _figure(trained, folder, data, seed=seed)
        card = model_card(
            name=name,
            config=trained.config,
            meta=trained.meta,
            title=trained.model.title,
            parameters=count_parameters(trained.model) - prior_parameters(trained.model),
            prior=None if trained.model.prior is None else trained.model.prior.describe(),
            splits={} if data is None else {s: len(data.split(s)) for s in SPLIT_ORDER[::-1]},
            evaluation=_shown_record(records, split),
            figure=figure,
            onnx=sidecar,
            gaussian_prior=trained.model.gaussian_prior,
        )
        (folder / CARD_FILE).write_text(card)
    return out


def _copy_checkpoint(trained: TrainedRun, folder: Path) -> None:
    """The checkpoint's files, and the training curves where the run has them."""
    for file in (CONFIG_FILE, WEIGHTS_FILE, META_FILE):
        shutil.copyfile(trained.checkpoint / file, folder / file)
    if (trained.records_dir / METRICS_FILE).is_file():
        shutil.copyfile(trained.records_dir / METRICS_FILE, folder / METRICS_FILE)


def _copy_prior(trained: TrainedRun, folder: Path) -> list[str]:
    """A VQ-VAE's fitted prior (the checkpoint of it that loading picks), as `prior/`;
    refused when it modelled the codes of other weights than the packed checkpoint's."""
    found = find_prior(trained.checkpoint)
    if not trained.model.prior_fitted_after_training or found is None:
        return []
    _, config = load_prior(found)
    if not fitted_to(config, trained.checkpoint):
        raise VaelabError(
            f"the prior in {found} was fitted to the codes of another checkpoint than "
            f"{trained.checkpoint}; pack the checkpoint it was fitted to (--checkpoint "
            f"{config.source_checkpoint}) or fit it again with vaelab train-prior --force"
        )
    source = resolve_checkpoint(found, prefer="best")
    (folder / PRIOR_FOLDER).mkdir()
    for file in (CONFIG_FILE, WEIGHTS_FILE, META_FILE):
        shutil.copyfile(source / file, folder / PRIOR_FOLDER / file)
    return [f"{PRIOR_FOLDER}/{file}" for file in (CONFIG_FILE, WEIGHTS_FILE, META_FILE)]


def _describe(folder: Path, listed: list[str], checkpoint: str) -> None:
    """bundle.json: the format, and the size and SHA-256 of each model file."""
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaelab_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": checkpoint,
        "files": describe_files(folder, listed),
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(description, indent=2) + "\n")


def _figure(
    trained: TrainedRun, folder: Path, data: DataSplits | None, *, seed: int
) -> tuple[str, str] | None:
    """The card's figure, written into the bundle: prior samples (a row per class for a
    label-conditional run; completions of the data for a cvae trained with --observe), or an
    autoencoder's reconstructions (None without the data)."""
    model = trained.model
    if model.conditional and (model.needs_labels or data is not None):
        path = folder / SAMPLES_PNG
        chosen = None if data is None else trained.split_of(data)
        save_samples(trained, path, n=SAMPLES, seed=seed, chosen=chosen)
        what = "a row per class" if model.needs_labels else "completions of data images"
        return path.name, f"images decoded from codes drawn from the prior, {what} (seed {seed})"
    if model.has_prior and not model.awaiting_prior and not model.conditional:
        path = folder / SAMPLES_PNG
        save_grid(prior_samples(trained.model, SAMPLES, seed), path, trained.value_range)
        return path.name, f"{SAMPLES} images decoded from codes drawn from the prior (seed {seed})"
    if data is None:
        return None
    chosen = trained.split_of(data)
    path = save_reconstructions(trained, chosen.x, 10, folder / RECONSTRUCTIONS_PNG)
    return path.name, f"{chosen.split} images (top) above their reconstructions"


def _pack(args: argparse.Namespace) -> Iterator[Path | str]:
    out = pack_run(
        args.run,
        args.out,
        checkpoint=args.checkpoint,
        k=args.k,
        evaluate=not args.no_eval,
        onnx=not args.no_onnx,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
        progress=show_progress(args),
    )
    size = sum(p.stat().st_size for p in [out, *out.rglob("*")] if p.is_file())
    logger.info("bundle of %s written: %.1f MB", args.run, size / 1e6)
    yield out


def add_parsers(subparsers: Any) -> None:
    """The `pack` subcommand."""
    parser = subparsers.add_parser(
        "pack",
        help="a shareable bundle of a run: weights, ONNX, a model card",
        description="Write a run's checkpoint as one folder (or .zip, when OUT ends in .zip) "
        "laid out as a Hugging Face model repository: config.json, model.safetensors, "
        "meta.json, the ONNX files under onnx/, a model card README.md with the evaluation and "
        "a sample grid, and bundle.json with each model file's SHA-256. vaelab.load and every "
        "command that takes a run take the bundle too. Uploading it to the Hub is one command: "
        "huggingface-cli upload USER/NAME OUT.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "out", metavar="OUT", help="the bundle to write: a new or empty folder, or a .zip file"
    )
    parser.add_argument(
        "--k",
        type=parse_positive,
        default=DEFAULT_K,
        help="importance samples per image of the packed evaluation, when the run has none "
        f"of the whole test split (default: {DEFAULT_K})",
    )
    parser.add_argument("--no-eval", action="store_true", help="do not evaluate; the card says so")
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="leave out the ONNX files (then the export extra is not needed)",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        seed="seed of the evaluation, the sample grid and the codes the ONNX files are "
        "checked on (default: 0)",
        dataset=RUN_DATASET,
        data_dir=RUN_DATA_DIR,
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet(parser)


COMMANDS = {"pack": _pack}
