"""`vaelab`'s entry point: parse the arguments, run the subcommand, print its outputs, and turn
every expected failure into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from vaelab.cli import console
from vaelab.cli.arguments import add_quiet
from vaelab.errors import VaelabError
from vaelab.version import __version__

# The subcommands, in the order `vaelab --help` lists them: the module in vaelab.cli that defines
# each (its add_parsers declares the arguments, its COMMANDS maps the name to a function from
# parsed arguments to outputs) and its line in that list. A module, and torch with it, is
# imported only for the subcommand being run: `vaelab --help` and a mistyped command answer at
# once instead of after the seconds torch and matplotlib take to import.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model into a run folder"),
    "train-prior": ("train_prior", "fit a vqvae run's PixelCNN prior over its codes"),
    "sample": ("figures", "PNG grid of images decoded from the prior"),
    "reconstruct": ("figures", "images above their reconstructions"),
    "interpolate": ("figures", "PNG strip along the latent path between two images"),
    "analogy": ("analogy", "images redrawn as every class: style and class apart (cvae, m2)"),
    "complete": ("complete", "completions of the unseen part of images (a cvae with --observe)"),
    "info": ("info", "a run's configuration and last metrics"),
    "eval": ("evaluate", "a run's bound on -log p(x) (ELBO, importance-weighted NLL) and more"),
    "predict": ("predict", "the classes an m2 run's classifier gives images, with probabilities"),
    "plot": ("plot", "every figure of a run as PNGs"),
    "report": ("plot", "one self-contained HTML report of a run"),
    "compare": ("compare", "runs on the same data side by side: figure and table of measures"),
    "serve": ("serve", "the latent-space explorer in the browser"),
    "embed": ("embed", "the codes of every image of a dataset, as .npy, .npz or .csv"),
    "export": ("export", "the encoder and decoder as ONNX files, checked against PyTorch"),
    "pack": ("pack", "a shareable bundle of a run: weights, ONNX, a model card"),
}

EXAMPLES = """\
examples:
  vaelab train                                    a VAE on the bundled 8x8 digits (~5 s on a CPU)
  vaelab train --dataset mnist --latent-dim 2 --epochs 20 --out runs/mnist-vae
  vaelab train --resume runs/mnist-vae --epochs 40
  vaelab sample runs/mnist-vae --n 100
  vaelab interpolate runs/mnist-vae --from 3 --to 2   between test images 3 and 2 (a 0 and a 1)
  vaelab info runs/mnist-vae
  vaelab eval runs/mnist-vae --k 5000             test NLL, as papers report it
  vaelab export runs/mnist-vae                    encoder and decoder as ONNX files
  vaelab pack runs/mnist-vae bundles/mnist-vae.zip   a shareable bundle with a model card

'vaelab COMMAND --help' describes each command and its options, with their defaults.
"""


def command(name: str) -> Callable[[argparse.Namespace], Iterable[Path | str]]:
    """The function that runs subcommand `name` (importing its module)."""
    module = importlib.import_module(f"vaelab.cli.{SUBCOMMANDS[name][0]}")
    return module.COMMANDS[name]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not a usage dump: `vaelab: error: ...`."""
        self.exit(2, f"vaelab: error: {message} (see '{self.prog} --help')\n")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `vaelab` parser. The arguments of the subcommands in `commands` (default: all) are
    declared by their modules; the others are only listed, so building it needs no torch."""
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
    wanted = {SUBCOMMANDS[name][0] for name in (SUBCOMMANDS if commands is None else commands)}
    declared: set[str] = set()
    for name, (module, summary) in SUBCOMMANDS.items():
        if module not in wanted:
            subparsers.add_parser(name, help=summary)
        elif module not in declared:  # add_parsers declares all of the module's subcommands
            importlib.import_module(f"vaelab.cli.{module}").add_parsers(subparsers)
            declared.add(module)
    return parser


def _named_command(argv: Sequence[str]) -> list[str]:
    """The subcommand `argv` names, if any: its first word that is not an option (vaelab's own
    options, before the subcommand, take no values)."""
    words = [word for word in argv if not word.startswith("-")]
    return words[:1] if words and words[0] in SUBCOMMANDS else []


_SIZE_FLAGS = defaultdict(
    lambda: "--batch-size, --n or --samples",
    {"eval": "--chunk or --k", "train": "--batch-size or --k"},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vaelab` with `argv` (default sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_named_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _run(args)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM (`timeout`, `docker stop`, systemd) ends it as Ctrl-C
    does, so that its clean-up runs: temporary files removed, an unpacked bundle deleted."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be caught in the main thread
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed subcommand, printing its outputs; expected failures become one line."""
    import torch  # every command needs it; only parsing and --help go without

    from vaelab.training.distributed import process_rank

    try:
        main_process = process_rank() == 0  # under torchrun, only rank 0 talks
    except VaelabError as error:
        console.error(str(error))
        return 1
    machine_readable = getattr(args, "json", False)  # stdout holds only the JSON then
    console.configure_logging(quiet=args.quiet or machine_readable or not main_process)
    try:
        with _terminate_as_interrupt():
            for output in command(args.command)(args):
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
