"""The header of vaelab's own JSON files (a checkpoint's meta.json, a bundle's bundle.json):
a `format` name and an integer `format_version`, checked in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError


def check_header(
    values: Any, *, file: Path, owner: Path, kind: str, format: str, newest: int
) -> None:
    """A one-line VaelabError unless `values` (read from `file`, which describes `owner`) is
    a table of this `format` with a `format_version` from 1 to `newest`. `kind` names what
    `owner` should be, e.g. "vaelab checkpoint"."""
    if not isinstance(values, dict) or values.get("format") != format:
        raise VaelabError(f"{owner} is not a {kind} (a foreign {file.name})")
    version = values.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise VaelabError(f"{file} has no valid format_version: it is corrupt")
    if version > newest:
        raise VaelabError(f"{owner} was written by a newer vaelab (format {version}); upgrade")
