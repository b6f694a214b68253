"""`vaelab`'s entry point: parse the arguments, run the subcommand, print its outputs, and turn
every expected failure into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from vaelab.cli import compare, console, evaluate, figures, info, plot, serve, train
from vaelab.cli.arguments import add_quiet
from vaelab.errors import VaelabError
from vaelab.training.distributed import process_rank
from vaelab.version import __version__

# The subcommands' modules, in the order `vaelab --help` lists them; each has add_parsers
# (subparsers) and COMMANDS, its subcommands' functions from parsed arguments to outputs.
MODULES = (train, figures, info, evaluate, plot, compare, serve)
COMMANDS: dict[str, Callable[[argparse.Namespace], Iterable[Path | str]]] = {
    name: run for module in MODULES for name, run in module.COMMANDS.items()
}

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
    """The `vaelab` parser with every subcommand."""
    parser = _Parser(
        prog="vaelab",
        epilog=EXAMPLES,
        description="Train variational and standard autoencoders on images, and look at what "
        "they learned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    add_quiet(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in MODULES:
        module.add_parsers(subparsers)
    return parser


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
        console.error(str(error))
        return 1
    machine_readable = getattr(args, "json", False)  # stdout holds only the JSON then
    console.configure_logging(quiet=args.quiet or machine_readable or not main_process)
    try:
        for output in COMMANDS[args.command](args):
            if main_process:
                print(output, flush=True)
    except BrokenPipeError:  # `vaelab info RUN | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except VaelabError as error:
        if main_process:  # every rank fails alike under torchrun; one message is enough
            console.error(str(error))
        return 1
    except OSError as error:  # permissions, a full disk: name the file, skip the traceback
        console.error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return 1
    except torch.cuda.OutOfMemoryError:
        console.error(f"out of GPU memory; try a smaller {_SIZE_FLAGS[args.command]}")
        return 1
    except RuntimeError as error:
        if "can't allocate memory" not in str(error):  # the CPU allocator's out-of-memory
            raise
        console.error(f"out of memory; try a smaller {_SIZE_FLAGS[args.command]}")
        return 1
    except KeyboardInterrupt as interrupt:
        console.error(f"interrupted{f'; {interrupt}' if str(interrupt) else ''}")
        return 130
    return 0
