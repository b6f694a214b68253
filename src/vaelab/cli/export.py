"""`vaelab export`: a run's encoder and decoder as ONNX files, checked against PyTorch."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vaelab.cli.arguments import (
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    parse_positive,
)
from vaelab.data import DataSplits
from vaelab.errors import VaelabError, plural
from vaelab.export.graphs import model_graphs
from vaelab.export.onnx_files import (
    TOLERANCE,
    OnnxExport,
    export_onnx,
    is_export,
    require_export_dependencies,
)
from vaelab.export.preprocessing import describe_preprocessing
from vaelab.files import check_replaceable, folder_made_for
from vaelab.runs import TrainedRun, open_run

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"  # the export's default folder inside the run
DEFAULT_CHECKS = 1000  # test images and codes the files are checked on


def run_data(
    trained: TrainedRun, *, dataset: str | None = None, data_dir: str | None = None
) -> DataSplits | None:
    """The run's dataset, or None (with an info line) where it is not at hand; an error for
    a `dataset` or `data_dir` given that does not serve."""
    try:
        return trained.load_data(dataset, data_dir)
    except VaelabError as error:
        if dataset is not None or data_dir is not None:
            raise
        logger.info("the run's data is not at hand (%s)", error)
        return None


def check_inputs(
    trained: TrainedRun, n: int, data: DataSplits | None, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, codes) to check an export on: the first n images of the run's test split
    (or of val, then train, where it is empty), or images decoded from the prior without
    `data`; and n codes from the prior (N(0, I) for an autoencoder)."""
    model = trained.model
    generator = torch.Generator(model.device).manual_seed(seed)
    with torch.inference_mode():
        codes = model.draw_codes(n, generator=generator).cpu()
        if data is not None:
            return trained.split_of(data).x[:n], codes
        logger.info("checking the export on images decoded from the prior instead")
        return model.decode(codes.to(model.device, model.dtype)).cpu(), codes


def export_run(
    run: str | Path,
    *,
    out: str | Path | None = None,
    checkpoint: str | None = None,
    checks: int = DEFAULT_CHECKS,
    tolerance: float = TOLERANCE,
    seed: int = 0,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> OnnxExport:
    """Export a run's checkpoint into `out` (default RUN/onnx)."""
    require_export_dependencies()  # before loading anything
    if not tolerance > 0:
        raise VaelabError(f"--tolerance must be positive, got {tolerance}")
    trained = open_run(run, checkpoint=checkpoint, device="cpu")
    model_graphs(trained.model)  # a model the graphs cannot express: one line, before any work
    folder = trained.run_dir / ONNX_DIR if out is None else Path(out)
    if out is not None or folder.parent.exists():  # a bundle's outputs may be still to make
        check_replaceable(folder, replace_if=is_export)  # before the data is loaded
    data = run_data(trained, dataset=dataset, data_dir=data_dir)
    with folder_made_for(folder.parent):  # a bundle's outputs folder, made when missing
        return write_export(
            trained, folder, data, checks=checks, seed=seed, tolerance=tolerance, source=run
        )


def write_export(
    trained: TrainedRun,
    folder: Path,
    data: DataSplits | None,
    *,
    checks: int = DEFAULT_CHECKS,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    source: str | Path | None = None,
) -> OnnxExport:
    """Write the ONNX files of an opened run into `folder`, checked on `checks` of its images
    (see `check_inputs`) and codes; `source` is the run as named, for the sidecar."""
    images, codes = check_inputs(trained, checks, data, seed=seed)
    about = {"checkpoint": trained.checkpoint_name, "epoch": trained.meta.get("epoch")}
    return export_onnx(
        trained.model,
        folder,
        images=images,
        codes=codes,
        value_range=trained.value_range,
        preprocessing=describe_preprocessing(trained.config.data, trained.config.model.data_shape),
        tolerance=tolerance,
        about=about if source is None else {"run": str(source), **about},
    )


def _export(args: argparse.Namespace) -> Iterator[Path | str]:
    done = export_run(
        args.run,
        out=args.out,
        checkpoint=args.checkpoint,
        checks=args.check,
        tolerance=args.tolerance,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
    )
    parity = done.sidecar["parity"]
    if done.sidecar["decoder"]["kind"] == "autoregressive-scoring":
        logger.warning(
            "the decoder is autoregressive: decoder.onnx is its one-pass scoring function "
            "(z, x) -> p(x_j | z, x_<j); sampling runs it once per pixel (see onnx.json)"
        )
    absolute = parity["max_abs_difference"]
    logger.info(
        "onnxruntime matches PyTorch on %s and %s: largest difference %.2g (%s), %.2g "
        "relative to max(1, |value|) over every output",
        plural(parity["images"], "image"),
        plural(parity["codes"], "code"),
        max(absolute.values()),
        max(absolute, key=absolute.__getitem__),
        done.max_difference,
    )
    yield from done.files


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def add_parsers(subparsers: Any) -> None:
    """The `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="the encoder and decoder as ONNX files, checked against PyTorch",
        description="Write a run's encoder (x -> the posterior's parameters) and decoder (z -> "
        "the mean of p(x|z), and its logits; for an autoregressive decoder its one-pass scoring "
        "function of (z, x)) as ONNX files with a dynamic batch size, and a "
        "JSON sidecar saying what each input and output means. The files are run in "
        "onnxruntime on test images and codes and refused unless they match PyTorch. Needs "
        "the export extra: pip install 'vaelab[export]'.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument(
        "--format", choices=("onnx",), default="onnx", help="the file format (default: onnx)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"folder for encoder.onnx, decoder.onnx and onnx.json; an earlier export there is "
        f"replaced (default: RUN/{ONNX_DIR}; for a bundle NAME, NAME-outputs/{ONNX_DIR} "
        "beside it)",
    )
    parser.add_argument(
        "--check",
        type=parse_positive,
        default=DEFAULT_CHECKS,
        metavar="N",
        help=f"test images and codes to compare onnxruntime with PyTorch on (default: "
        f"{DEFAULT_CHECKS})",
    )
    parser.add_argument(
        "--tolerance",
        type=_positive_float,
        default=TOLERANCE,
        help="the largest difference accepted between onnxruntime and PyTorch on any output "
        "value, divided by max(1, |value|): absolute within [-1, 1], relative beyond (float32 "
        f"cannot hold an absolute 1e-5 on large logits) (default: {TOLERANCE:g})",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        seed="seed of the codes checked (default: 0)",
        dataset=RUN_DATASET,
        data_dir=RUN_DATA_DIR,
    )
    add_quiet(parser)


COMMANDS = {"export": _export}
