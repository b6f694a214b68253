"""The `vaelab` command: parses arguments into configs and calls the command functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from vaelab import cli_console, cli_parsers, commands
from vaelab._version import __version__
from vaelab.analysis.compare import compare_runs
from vaelab.analysis.report import write_report
from vaelab.analysis.run_plots import plot_run
from vaelab.cli_parsers import add_quiet
from vaelab.cli_train import add_train_parser, train_config_from_args
from vaelab.errors import VaelabError
from vaelab.eval_command import evaluate_run, format_result
from vaelab.figure_commands import interpolate, reconstruct, sample
from vaelab.run_info import info
from vaelab.training.distributed import process_rank

logger = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  vaelab train                                    a VAE on the bundled 8x8 digits (~5 s on a CPU)
  vaelab train --dataset mnist --latent-dim 2 --epochs 20 --out runs/mnist-vae
  vaelab train --resume runs/mnist-vae --epochs 40
  vaelab sample runs/mnist-vae --n 100
  vaelab interpolate runs/mnist-vae --from 3 --to 7
  vaelab info runs/mnist-vae
  vaelab eval runs/mnist-vae --k 5000             test NLL, as papers report it
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not a usage dump: `vaelab: error: ...`."""
        self.exit(2, f"vaelab: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", epilog=EXAMPLES,
                     description="Train variational and standard autoencoders on images, and "
                     "look at what they learned.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    add_quiet(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_train_parser(subparsers)
    cli_parsers.add_sample_parser(subparsers)
    cli_parsers.add_reconstruct_parser(subparsers)
    cli_parsers.add_interpolate_parser(subparsers)
    cli_parsers.add_info_parser(subparsers)
    cli_parsers.add_eval_parser(subparsers)
    cli_parsers.add_plot_and_report_parsers(subparsers)
    cli_parsers.add_compare_parser(subparsers)
    cli_parsers.add_serve_parser(subparsers)
    return parser


def _train(args: argparse.Namespace) -> list[Path]:
    config, run_dir, resume = train_config_from_args(args)
    progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
    try:
        return commands.train_run(
            config,
            run_dir,
            resume=resume,
            force=args.force,
            progress=progress,
            figures=not args.no_figures,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(commands.saved_state(run_dir)) from None
    except torch.cuda.OutOfMemoryError:
        raise VaelabError(
            f"out of GPU memory; try a smaller --batch-size ({commands.saved_state(run_dir)})"
        ) from None


def _sample(args: argparse.Namespace) -> list[Path]:
    return [sample(Path(args.run), n=args.n, seed=args.seed, out=args.out,
                   checkpoint=args.checkpoint, device=args.device, sampler=args.sampler,
                   dataset=args.dataset, data_dir=args.data_dir)]  # fmt: skip


def _compare(args: argparse.Namespace) -> list[Path]:
    result = compare_runs([Path(p) for p in args.runs], Path(args.out), sampler=args.sampler,
                          n_samples=args.samples, n_pairs=args.pairs, seed=args.seed,
                          device=args.device, dataset=args.dataset,
                          data_dir=args.data_dir)  # fmt: skip
    return [result.figure, result.json, result.table]


def _reconstruct(args: argparse.Namespace) -> list[Path]:
    return [reconstruct(Path(args.run), n=args.n, split=args.split, out=args.out,
                        dataset=args.dataset, data_dir=args.data_dir,
                        checkpoint=args.checkpoint, device=args.device)]  # fmt: skip


def _interpolate(args: argparse.Namespace) -> list[Path]:
    return [interpolate(Path(args.run), start=args.start, end=args.end, steps=args.steps,
                        spherical=args.spherical, split=args.split, out=args.out,
                        dataset=args.dataset, data_dir=args.data_dir,
                        checkpoint=args.checkpoint, device=args.device)]  # fmt: skip


def _info(args: argparse.Namespace) -> Iterator[str]:
    """The report first, then (with unreadable weights) the error: both reach the user."""
    report = info(Path(args.run), checkpoint=args.checkpoint, as_json=args.json)
    yield report.text
    if report.error:
        raise VaelabError(report.error)


def _eval(args: argparse.Namespace) -> Iterator[str | Path]:
    progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
    result, record, path = evaluate_run(
        Path(args.run), split=args.split, k=args.k, chunk=args.chunk, seed=args.seed,
        checkpoint=args.checkpoint, device=args.device, binarize=args.binarize,
        limit=args.limit, dataset=args.dataset, data_dir=args.data_dir, progress=progress,
    )  # fmt: skip
    if args.json:
        yield json.dumps(record, indent=2)
        return
    if not args.quiet:
        yield format_result(result, record, Path(args.run))
    yield path


def _figure_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"projection": args.projection, "split": args.split, "checkpoint": args.checkpoint,
            "max_points": args.max_points, "dataset": args.dataset, "data_dir": args.data_dir,
            "device": args.device, "seed": args.seed}  # fmt: skip


def _plot(args: argparse.Namespace) -> list[Path]:
    return plot_run(Path(args.run), args.out, **_figure_options(args))


def _report(args: argparse.Namespace) -> list[Path]:
    return [write_report(Path(args.run), args.out, **_figure_options(args))]


def _serve(args: argparse.Namespace) -> list[Path]:
    try:
        from vaelab.explorer import serve
    except ImportError as error:
        raise VaelabError(
            f"vaelab serve needs the explorer extra ({error.name} is missing): "
            "pip install 'vaelab[explorer]'"
        ) from None
    if not 0 < args.port < 65536:
        raise VaelabError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_request_bytes <= 0:
        raise VaelabError(f"--max-request-bytes must be positive, got {args.max_request_bytes}")
    serve([Path(p) for p in args.runs], host=args.host, port=args.port, device=args.device,
          max_request_bytes=args.max_request_bytes)  # fmt: skip
    return []


COMMANDS: dict[str, Callable[[argparse.Namespace], Iterable[Path | str]]] = {
    "train": _train,
    "sample": _sample,
    "reconstruct": _reconstruct,
    "interpolate": _interpolate,
    "info": _info,
    "eval": _eval,
    "plot": _plot,
    "report": _report,
    "compare": _compare,
    "serve": _serve,
}


_SIZE_FLAGS = defaultdict(
    lambda: "--batch-size, --n or --samples",
    {"eval": "--chunk or --k", "train": "--batch-size or --k"},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vaelab` with `argv` (default sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        main_process = process_rank() == 0  # under torchrun, only rank 0 talks
    except VaelabError as error:
        cli_console.error(str(error))
        return 1
    machine_readable = getattr(args, "json", False)  # stdout holds only the JSON then
    cli_console.configure_logging(quiet=args.quiet or machine_readable or not main_process)
    try:
        for output in COMMANDS[args.command](args):
            if main_process:
                print(output, flush=True)
    except BrokenPipeError:  # `vaelab info RUN | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except VaelabError as error:
        if main_process:  # every rank fails alike under torchrun; one message is enough
            cli_console.error(str(error))
        return 1
    except OSError as error:  # permissions, a full disk: name the file, skip the traceback
        cli_console.error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return 1
    except torch.cuda.OutOfMemoryError:
        cli_console.error(f"out of GPU memory; try a smaller {_SIZE_FLAGS[args.command]}")
        return 1
    except RuntimeError as error:
        if "can't allocate memory" not in str(error):  # the CPU allocator's out-of-memory
            raise
        cli_console.error(f"out of memory; try a smaller {_SIZE_FLAGS[args.command]}")
        return 1
    except KeyboardInterrupt as interrupt:
        cli_console.error(f"interrupted{f'; {interrupt}' if str(interrupt) else ''}")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
