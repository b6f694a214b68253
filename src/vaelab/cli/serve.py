"""`vaelab serve`: the latent-space explorer in the browser (needs the explorer extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vaelab.cli.arguments import MODELS_DEVICE, add_quiet, add_shared_arguments
from vaelab.errors import VaelabError


def add_parsers(subparsers: Any) -> None:
    """The `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="the latent-space explorer in the browser",
        description="A local web page to move through the latent space of one or more runs "
        "(two side by side, moving in step). Needs the explorer extra: "
        "pip install 'vaelab[explorer]'.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders or bundles (two: side by side)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; any other address "
        "is warned about)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the page may be reached by (the Host header), beside localhost, "
        "127.0.0.1, [::1] and --host; repeat for more (default: none)",
    )
    add_shared_arguments(parser, device=MODELS_DEVICE)
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=1_000_000,
        metavar="N",
        help="refuse request bodies larger than this (default: 1000000)",
    )
    parser.add_argument(
        "--server-decoding",
        action="store_true",
        help="decode every code on the server, as before the page decoded in the browser "
        "(default: the page decodes itself where the run's decoder allows)",
    )
    add_quiet(parser)


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
    bad = [name for name in args.allowed_host if not name.strip() or "/" in name]
    if bad:
        raise VaelabError(f"--allowed-host takes a host name such as example.lan, got {bad[0]!r}")
    serve(
        [Path(p) for p in args.runs],
        host=args.host,
        port=args.port,
        device=args.device,
        max_request_bytes=args.max_request_bytes,
        allowed_host=args.allowed_host,
        browser_decoding=not args.server_decoding,
    )
    return []


COMMANDS = {"serve": _serve}
