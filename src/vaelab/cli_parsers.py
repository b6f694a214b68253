"""The parsers of `vaelab`'s subcommands other than `train`, and the arguments they share."""

from __future__ import annotations

import argparse
from typing import Any

from vaelab.analysis.evaluate import DEFAULT_CHUNK, DEFAULT_K
from vaelab.analysis.latents import PROJECTIONS
from vaelab.analysis.samplers import SAMPLERS
from vaelab.figure_commands import MAX_FIGURE_IMAGES
from vaelab.training.config import DEVICES

# Help texts that several subcommands share word for word.
MODEL_DEVICE = "where to run the model; auto picks CUDA when available"
MODELS_DEVICE = "where to run the models; auto picks CUDA when available"
RUN_DATASET = (
    "the run's image folder, .npy or .npz file, if it moved since training (default: the path "
    "in the run's config.json)"
)
RUN_DATA_DIR = (
    "folder holding the MNIST / Fashion-MNIST IDX files, for runs on those (default: the "
    "run's, then $VAELAB_DATA, then the download cache)"
)


def parse_seed(text: str) -> int:
    """A seed every consumer accepts (torch, numpy and scikit-learn): 0 <= seed < 2**32."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to 2**32 - 1, got '{text}'"
        )
    return value


def add_quiet(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # SUPPRESS in the subcommands keeps `vaelab -q train` working: they do not reset the flag.
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only the output paths, warnings and errors")  # fmt: skip


def add_shared_arguments(
    parser: argparse.ArgumentParser, *, checkpoint: bool = False, device: str | None = None,
    seed: str | None = None, split: bool = False, dataset: str | None = None,
    data_dir: str | None = None,
) -> None:  # fmt: skip
    """The flags several subcommands take, each declared here once, in this order; `device`,
    `seed`, `dataset` and `data_dir` are the help texts (they differ between subcommands)."""
    if checkpoint:
        parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                            help="which checkpoint of a run folder (default: best)")  # fmt: skip
    if device is not None:
        parser.add_argument("--device", choices=DEVICES, default="auto", help=device)
    if seed is not None:
        parser.add_argument("--seed", type=parse_seed, default=0, help=seed)
    if split:
        parser.add_argument("--split", choices=("train", "val", "test"),
                            help="which split of the run's dataset; it is an error if it is "
                            "empty (default: test, or val, then train, when test is "
                            "empty)")  # fmt: skip
    if dataset is not None:
        parser.add_argument("--dataset", metavar="PATH", help=dataset)
    if data_dir is not None:
        parser.add_argument("--data-dir", metavar="DIR", help=data_dir)


def _add_model_arguments(parser: argparse.ArgumentParser, default_png: str) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder, or one of its checkpoint folders")
    parser.add_argument(
        "--out",
        metavar="PNG",
        help=f"where to write the PNG, or a folder for it (default RUN/{default_png})",
    )
    add_shared_arguments(parser, checkpoint=True, device=f"{MODEL_DEVICE} (default: auto)")
    add_quiet(parser)


def add_sample_parser(subparsers: Any) -> None:
    sample = subparsers.add_parser("sample", help="PNG grid of images decoded from the prior")
    _add_model_arguments(sample, "samples.png")
    sample.add_argument("--n", type=int, default=64,
                        help=f"number of samples, at most {MAX_FIGURE_IMAGES} "
                        "(default: 64)")  # fmt: skip
    add_shared_arguments(sample, seed="seed of the codes (default: 0)")
    sample.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        default="prior",
        help="prior: z ~ N(0, I); gmm: a Gaussian mixture fitted to the run's "
        "training codes, an autoencoder's fairest chance (default: prior)",
    )
    add_shared_arguments(
        sample,
        dataset="with --sampler gmm: the run's data, if it moved",
        data_dir="with --sampler gmm: folder with the MNIST IDX files",
    )


def add_reconstruct_parser(subparsers: Any) -> None:
    recon = subparsers.add_parser(
        "reconstruct", help="images above their reconstructions",
        description="Images spread evenly over a split of the run's dataset, each above its "
        "reconstruction, in row pairs of up to 10.",
    )  # fmt: skip
    _add_model_arguments(recon, "reconstructions.png")
    recon.add_argument("--n", type=int,
                       help=f"number of images, at most {MAX_FIGURE_IMAGES} and the split's size "
                       "(default: 10, or the whole split when smaller)")  # fmt: skip
    add_shared_arguments(recon, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)


def add_interpolate_parser(subparsers: Any) -> None:
    interp = subparsers.add_parser(
        "interpolate", help="PNG strip along the latent path between two images"
    )
    _add_model_arguments(interp, "interpolation.png")
    interp.add_argument("--from", dest="start", metavar="INDEX|IMAGE",
                        help="an index into --split or an image file (default: 0)")  # fmt: skip
    interp.add_argument("--to", dest="end", metavar="INDEX|IMAGE",
                        help="an index or an image file (default: the next image of another "
                        "class)")  # fmt: skip
    interp.add_argument("--steps", type=int, default=10,
                        help=f"decoded points between the two ends, at most {MAX_FIGURE_IMAGES} "
                        "(default: 10)")  # fmt: skip
    interp.add_argument("--spherical", action="store_true",
                        help="slerp between the codes instead of a straight line")  # fmt: skip
    add_shared_arguments(interp, split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)


def add_info_parser(subparsers: Any) -> None:
    info = subparsers.add_parser(
        "info", help="a run's configuration and last metrics",
        description="A run's configuration, size and last metrics. When the checkpoint's "
        "weights cannot be read, the report is still printed (parameters counted from "
        "config.json), and then the command exits with code 1 and an error naming the problem.",
    )  # fmt: skip
    info.add_argument("run", metavar="RUN", help="run folder, or one of its checkpoint folders")
    add_shared_arguments(info, checkpoint=True)
    info.add_argument("--json", action="store_true", help="print JSON instead")
    add_quiet(info)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return value


def add_eval_parser(subparsers: Any) -> None:
    evaluate = subparsers.add_parser(
        "eval", help="negative ELBO, importance-weighted NLL, active units of a run",
        description="Measure a run the way papers report VAEs, on its test split by default: "
        "the negative ELBO (reconstruction + KL), the importance-weighted estimate of -log p(x) "
        "with k samples (Burda et al. 2015), active units, KL per latent dimension and the "
        "reconstruction error. Prints a table and keeps it in RUN/eval.json.",
    )  # fmt: skip
    evaluate.add_argument("run", metavar="RUN", help="run folder, or one of its checkpoints")
    evaluate.add_argument(
        "--k",
        type=_positive,
        default=DEFAULT_K,
        help=f"importance samples per image (default: {DEFAULT_K})",
    )
    evaluate.add_argument("--chunk", type=_positive, default=DEFAULT_CHUNK,
                          help="at most this many (image, sample) pairs per decoder pass; bounds "
                          f"memory, not the result (default: {DEFAULT_CHUNK})")  # fmt: skip
    evaluate.add_argument(
        "--limit", type=_positive, metavar="N", help="only the first N images of the split"
    )
    evaluate.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=None,
                          help="score a fixed Bernoulli draw of the images (default: when the "
                          "run was trained with --binarize)")  # fmt: skip
    add_shared_arguments(evaluate, checkpoint=True, device=f"{MODEL_DEVICE} (default: auto)",
                         seed="seed of the samples and the binarisation (default: 0)",
                         split=True, dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet(evaluate)


def add_plot_and_report_parsers(subparsers: Any) -> None:
    """`plot` (every figure of a run as PNGs) and `report` (one self-contained HTML page)."""
    plot = subparsers.add_parser(
        "plot", help="every figure of a run as PNGs",
        description="Latent map, manifold grid, prior samples, reconstructions, interpolations, "
        "latent traversals and training curves of a run, as PNG files.",
    )  # fmt: skip
    report = subparsers.add_parser(
        "report", help="one self-contained HTML report of a run",
        description="The figures of `vaelab plot` embedded in one HTML file, with the run's "
        "config, metrics and eval.json results (when present).",
    )  # fmt: skip
    plot.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN/plots)")
    report.add_argument("--out", metavar="FILE",
                        help="the HTML file, or a folder for report.html (default: "
                        "RUN/report.html); the PNGs go into plots/ beside it")  # fmt: skip
    for parser in (plot, report):
        parser.add_argument("run", metavar="RUN", help="run folder, or a checkpoint folder")
        parser.add_argument("--projection", choices=PROJECTIONS, default="pca",
                            help="how the latent map flattens more than two latent dimensions "
                            "(default: pca; tsne is slower)")  # fmt: skip
        parser.add_argument("--max-points", type=int, default=5000, metavar="N",
                            help="codes drawn in the latent map, a seeded random subset "
                            "(default: 5000)")  # fmt: skip
        add_shared_arguments(parser, seed="seed of the subset, samples and interpolation pairs")
        add_shared_arguments(parser, checkpoint=True, device=MODEL_DEVICE, split=True,
                             dataset=RUN_DATASET, data_dir=RUN_DATA_DIR)  # fmt: skip
        add_quiet(parser)


def add_compare_parser(subparsers: Any) -> None:
    compare = subparsers.add_parser(
        "compare", help="runs on the same data side by side: figure and table of measures",
        description="Latent maps, sample grids and measures (decodability of random codes, "
        "gaps, interpolation smoothness, a Frechet distance in a classifier's feature space) for "
        "runs trained on the same data; writes comparison.png, comparison.json and comparison.md.",
    )  # fmt: skip
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders on the same data")
    compare.add_argument("--sampler", choices=tuple(SAMPLERS), default="gmm",
                         help="gmm also samples from a Gaussian mixture fitted to each run's "
                         "training codes (default: gmm)")  # fmt: skip
    compare.add_argument(
        "--out",
        metavar="DIR",
        default="comparison",
        help="folder for comparison.png/.json/.md (default: ./comparison)",
    )
    compare.add_argument(
        "--samples", type=int, default=2000, help="random codes per measure (default: 2000)"
    )
    compare.add_argument(
        "--pairs", type=int, default=100, help="test pairs to interpolate between (default: 100)"
    )
    add_shared_arguments(compare, seed="seed of codes and pairs")
    add_shared_arguments(compare, device=MODELS_DEVICE, dataset="the runs' data, if it moved",
                         data_dir="folder with the MNIST IDX files")  # fmt: skip
    add_quiet(compare)


def add_serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="the latent-space explorer in the browser",
        description="A local web page to move through the latent space of one or more runs "
        "(two side by side, moving in step). Needs the explorer extra: "
        "pip install 'vaelab[explorer]'.",
    )  # fmt: skip
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two: side by side)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    add_shared_arguments(serve, device=MODELS_DEVICE)
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=1_000_000,
        metavar="N",
        help="refuse request bodies larger than this (default: 1000000)",
    )
    add_quiet(serve)
