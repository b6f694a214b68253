"""`vaelab plot` (every figure of a run as PNGs) and `vaelab report` (the same figures in one
self-contained HTML page, with the run's config, metrics and eval.json). For data with known
factors both add the disentanglement figures of `vaelab.analysis.factor_figures`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from vaelab.analysis.conditional_report import (
    conditional_captions,
    conditional_section,
    draw_conditional_figures,
)
from vaelab.analysis.evaluate import EvalResult
from vaelab.analysis.factor_figures import MAX_IMAGES, FactorFigures, draw_factor_figures
from vaelab.analysis.latents import PROJECTIONS
from vaelab.analysis.report import (
    DisentanglementSection,
    EvalSection,
    figure_captions,
    render_report,
)
from vaelab.analysis.run_figures import check_options, draw_figures, figure_inputs
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    output_path,
)
from vaelab.cli.evaluate import format_result
from vaelab.cli.info import config_in_words
from vaelab.errors import VaelabError, plural
from vaelab.figures import save_figure
from vaelab.files import atomic_write_text, write_error
from vaelab.runs import RunSplit, load_run, open_run
from vaelab.training.metrics import read_metrics
from vaelab.training.runs import EVAL_FILE
from vaelab.version import __version__

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
REPORT_FILE = "report.html"


def save_figures(figures: dict[str, Figure], out_dir: Path) -> list[Path]:
    """Write each figure as out_dir/NAME.png (creating out_dir); the paths, in the dict's
    order (FIGURES, then FACTOR_FIGURES for data with known factors)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaelabError(f"cannot create {out_dir}: {error.strerror or error}") from None
    return [save_figure(figure, out_dir / f"{name}.png") for name, figure in figures.items()]


def plot_run(
    run: str | Path,
    out_dir: str | Path | None = None,
    *,
    projection: str = "pca",
    split: str | None = None,
    checkpoint: str | None = None,
    max_points: int = 5000,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_factor_images: int = MAX_IMAGES,
) -> list[Path]:
    """Draw every figure of a run into `out_dir` (default RUN/plots/) as NAME.png for NAME in
    FIGURES, and for data with known factors FACTOR_FIGURES (see `draw_factor_figures`, which
    scores at most `max_factor_images`); return the paths. `projection` ("pca" or "tsne")
    flattens latent spaces of more than two dimensions for the latent map, which shows at most
    `max_points` codes. See `vaelab.runs.load_run` for `split`, `checkpoint`, `dataset`,
    `data_dir` and `device`."""
    check_options(projection=projection, max_points=max_points)
    loaded = load_run(
        run, split=split, checkpoint=checkpoint, dataset=dataset, data_dir=data_dir, device=device
    )
    figures = draw_figures(loaded, projection=projection, max_points=max_points, seed=seed)
    figures |= draw_conditional_figures(loaded, seed=seed)
    factor = draw_factor_figures(loaded, max_images=max_factor_images, seed=seed)
    if factor is not None:
        figures |= factor.figures
    out = Path(out_dir) if out_dir is not None else loaded.run.run_dir / PLOTS_DIR
    paths = save_figures(figures, out)
    logger.info("wrote %d figures into %s", len(paths), out)
    return paths


def write_report(
    run: str | Path,
    out: str | Path | None = None,
    *,
    projection: str = "pca",
    split: str | None = None,
    checkpoint: str | None = None,
    max_points: int = 5000,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_factor_images: int = MAX_IMAGES,
    fidelity: bool = True,
    interactive: bool = False,
) -> Path:
    """Draw a run's figures (as `plot_run`, into a `plots/` folder beside the report) and write
    one self-contained HTML report, by default RUN/report.html; return its path. For data with
    known factors the report has a Disentanglement section: the scores of at most
    `max_factor_images` images of the split (see `draw_factor_figures`) and their figures. A
    run conditional on class labels has a Conditional model section (see
    `conditional_section`; `fidelity` False leaves out its label fidelity). `interactive`
    adds the explorer's live latent map, decoding in the page with no server (see
    `vaelab.explorer.offline`)."""
    check_options(projection=projection, max_points=max_points)
    trained = open_run(run, checkpoint=checkpoint, device=device)
    data = trained.load_data(dataset, data_dir)
    loaded = trained.split_of(data, split)
    live = None
    if interactive:  # first: a run the page cannot decode is refused before the figures
        from vaelab.explorer.offline import live_section, offline_run

        live = live_section(offline_run(loaded))
    run_dir = loaded.run.run_dir
    path = _report_path(run_dir, out)
    figures = draw_figures(loaded, projection=projection, max_points=max_points, seed=seed)
    pngs = save_figures(figures, path.parent / PLOTS_DIR)
    model = loaded.run.model
    captions = figure_captions(latent_dim=model.config.latent_dim, has_prior=model.gaussian_prior)
    captions |= conditional_captions(model, captions)
    factor = draw_factor_figures(loaded, max_images=max_factor_images, seed=seed)
    section = None
    if factor is not None:
        factor_pngs = save_figures(factor.figures, path.parent / PLOTS_DIR)
        section = DisentanglementSection.from_result(
            factor.result,
            note=_factor_note(factor),
            figures=[(p.stem, captions[p.stem], p.read_bytes()) for p in factor_pngs],
        )
    drawn = draw_conditional_figures(loaded, seed=seed)
    conditional_pngs = save_figures(drawn, path.parent / PLOTS_DIR)
    conditional = conditional_section(
        loaded,
        data,
        [(p.stem, captions[p.stem], p.read_bytes()) for p in conditional_pngs],
        seed=seed,
        fidelity=fidelity,
        dataset=dataset,
        data_dir=data_dir,
    )
    page = render_report(
        title=f"vaelab report: {run_dir.name}",
        summary=_summary(loaded, projection=projection, max_points=max_points),
        figures=[(p.stem, captions[p.stem], p.read_bytes()) for p in pngs],
        config=config_in_words(loaded.run.config.to_dict()),
        records=read_metrics(loaded.run.records_dir),
        evaluation=read_evaluation(run_dir) or read_evaluation(loaded.run.records_dir),
        disentanglement=section,
        conditional=conditional,
        live=live,
    )
    try:
        atomic_write_text(path, page)
    except OSError as error:
        raise write_error(path, error) from None
    logger.info("wrote %s", path)
    return path


def _factor_note(factor: FactorFigures) -> str:
    result = factor.result
    scored = (
        f"all {factor.split_size:,} images"
        if factor.images == factor.split_size
        else f"a seeded random {factor.images:,} of the {factor.split_size:,} images"
    )
    return (
        f"The codes (posterior means) of {scored} of the {factor.split} split against its "
        f"{plural(len(result.factors.names), 'factor')} ({', '.join(result.factors.names)}), "
        f"scored by vaelab's own MIG, DCI, SAP and FactorVAE score (seed {result.seed}, "
        f"{result.seconds:.1f} s); the traversals start from {factor.split} image "
        f"#{factor.reference}."
    )


def _report_path(run_dir: Path, out: str | Path | None) -> Path:
    return output_path(run_dir / REPORT_FILE, out, suffixes=(".html", ".htm"), what="an .html file")


def read_evaluation(run_dir: Path) -> list[EvalSection] | None:
    """The records of RUN/eval.json, each as the table `vaelab eval` prints; None when there
    is no eval.json. A file or record that cannot be read is reported in the page (and logged)
    rather than stopping the report."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("%s could not be read (%s); the report leaves it out", path, error)
        return [EvalSection(EVAL_FILE, f"{path} could not be read: {error}")]
    if not isinstance(records, dict):
        return [EvalSection(EVAL_FILE, f"{path} is not a record of `vaelab eval` (not an object)")]
    return [_eval_section(str(key), record, run_dir) for key, record in records.items()]


EVAL_FIELDS = {f.name for f in dataclasses.fields(EvalResult)}


def _eval_section(key: str, record: Any, run_dir: Path) -> EvalSection:
    """One eval.json record through `format_result`, the table `vaelab eval` printed for it;
    a record of `vaelab eval --disentanglement` as its scores."""
    if isinstance(record, dict) and isinstance(record.get("scores"), dict):
        return EvalSection(key, _scores_text(record))
    try:
        result = EvalResult(**{k: v for k, v in record.items() if k in EVAL_FIELDS})
        text = format_result(result, record, run_dir)
    except (AttributeError, TypeError, KeyError, ValueError) as error:
        logger.warning("eval.json record %s could not be read (%s)", key, error)
        shown = json.dumps(record, indent=2, default=str)
        return EvalSection(key, f"not a record `vaelab eval` wrote ({error}):\n{shown}")
    return EvalSection(key, text, result.kl_per_dim)


def _scores_text(record: dict[str, Any]) -> str:
    """A `vaelab eval --disentanglement` record: what it scored, then one score a line."""
    factors = ", ".join(map(str, record.get("factors", [])))
    lines = [
        f"disentanglement of {record.get('examples', '?')} {record.get('split', '?')} images "
        f"against the factors {factors} (seed {record.get('seed', '?')})"
    ]
    for name, value in record["scores"].items():
        shown = f"{value:8.4f}" if isinstance(value, int | float) else str(value)
        lines.append(f"  {name:<22} {shown}")
    return "\n".join(lines)


def _summary(loaded: RunSplit, *, projection: str, max_points: int) -> dict[str, Any]:
    model, data = loaded.run.config.model, loaded.run.config.data
    return {
        "run": str(loaded.run.run_dir),
        "model": model.model,
        "latent dimensions": model.latent_dim,
        "architecture": model.architecture,
        "dataset": data.dataset,
        "image shape (C, H, W)": list(model.data_shape),
        "checkpoint": f"{loaded.run.checkpoint_name} (epoch {loaded.run.meta.get('epoch', '?')})",
        "figures drawn from": figure_inputs(loaded, max_points=max_points),
        "projection": projection if model.latent_dim > 2 else "none (2-D latent space)",
        "vaelab": __version__,
        "written": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- the command line -------------------------------------------------------------------------


def add_parsers(subparsers: Any) -> None:
    """The `plot` and `report` subcommands, which take the same options."""
    plot = subparsers.add_parser(
        "plot",
        help="every figure of a run as PNGs",
        description="Latent map, manifold grid, prior samples, reconstructions, interpolations, "
        "latent traversals and training curves of a run, as PNG files; for data with known "
        "factors (--dataset shapes) also the latent x factor mutual information and traversals "
        "labelled with the factor each latent captures; for a run conditional on class labels "
        "(cvae, m2) also samples of every class and analogies (each image redrawn as every "
        "class).",
    )
    report = subparsers.add_parser(
        "report",
        help="one self-contained HTML report of a run",
        description="The figures of `vaelab plot` embedded in one HTML file, with the run's "
        "config, metrics and eval.json results (when present); for data with known factors, "
        "a Disentanglement section with MIG, DCI, SAP and the FactorVAE score; for a run "
        "conditional on class labels (cvae, m2), a Conditional model section: samples of every "
        "class, analogies, the label fidelity of its samples and, for an m2, its classifier's "
        "accuracy and confusion matrix.",
    )
    plot.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN/plots)")
    report.add_argument(
        "--out",
        metavar="FILE",
        help="the HTML file, or a folder for report.html (default: RUN/report.html); the PNGs "
        "go into plots/ beside it",
    )
    for parser in (plot, report):
        parser.add_argument("run", metavar="RUN", help=RUN_PATH)
        parser.add_argument(
            "--projection",
            choices=PROJECTIONS,
            default="pca",
            help="how the latent map flattens more than two latent dimensions (default: pca; "
            "tsne is slower)",
        )
        parser.add_argument(
            "--max-points",
            type=int,
            default=5000,
            metavar="N",
            help="codes drawn in the latent map, a seeded random subset (default: 5000)",
        )
        add_shared_arguments(parser, seed="seed of the subset, samples and interpolation pairs")
        add_shared_arguments(
            parser,
            checkpoint=True,
            device=MODEL_DEVICE,
            split=True,
            dataset=RUN_DATASET,
            data_dir=RUN_DATA_DIR,
        )
        add_quiet(parser)
    report.add_argument(
        "--interactive",
        action="store_true",
        help="add the explorer's live latent map, which decodes in the page itself (no "
        "server; the file grows by about 6 MB, onnxruntime-web's WebAssembly)",
    )
    report.add_argument(
        "--no-fidelity",
        action="store_true",
        help="leave out the label fidelity of a cvae's or an m2's samples (which trains the "
        "dataset's classifier on its first use)",
    )


def _figure_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "projection": args.projection,
        "split": args.split,
        "checkpoint": args.checkpoint,
        "max_points": args.max_points,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "device": args.device,
        "seed": args.seed,
    }


def _plot(args: argparse.Namespace) -> list[Path]:
    return plot_run(Path(args.run), args.out, **_figure_options(args))


def _report(args: argparse.Namespace) -> list[Path]:
    options = _figure_options(args)
    return [
        write_report(
            Path(args.run),
            args.out,
            **options,
            fidelity=not args.no_fidelity,
            interactive=args.interactive,
        )
    ]


COMMANDS = {"plot": _plot, "report": _report}
