"""The `vaelab` command line: one module per command, each with its parser, the function it
calls, and the library functions behind it; `app` ties them together."""

from vaelab.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
