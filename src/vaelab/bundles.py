"""Reading a bundle: one folder (or `.zip`) holding a trained model and what describes it.

A bundle (written by `vaelab pack`) is laid out as a Hugging Face model repository: the
checkpoint's `config.json`, `model.safetensors` and `meta.json` at the top, the ONNX files
under `onnx/`, a model card `README.md`, and `bundle.json`, which lists the model's files with
their sizes and SHA-256 digests. Opening one checks every listed file, so a bundle with a file
missing or altered fails with one line instead of loading something else.

A `.zip` bundle is unpacked into a private temporary folder that lives as long as the process.
Commands never write into a bundle: their outputs go to NAME-outputs beside it.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vaelab.errors import VaelabError
from vaelab.formats import check_header
from vaelab.training.checkpoint import resolve_checkpoint

BUNDLE_FILE = "bundle.json"
CARD_FILE = "README.md"  # the model card
LIBRARY_NAME = "vaelab"  # the card's `library_name` on the Hugging Face Hub
FORMAT = "vaelab-bundle"
FORMAT_VERSION = 1
OUTPUTS_SUFFIX = "-outputs"  # a bundle's outputs go to NAME-outputs beside it
_unpacked: dict[Path, Path] = {}  # zip file -> its unpacked folder, for this process


def is_bundle(path: str | Path) -> bool:
    """Whether `path` is (meant as) a bundle: a folder with bundle.json, or a .zip file
    (by its suffix or its contents)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)
    return (path / BUNDLE_FILE).is_file()


def bundle_home(path: str | Path) -> Path:
    """Where commands write a bundle's outputs by default: the folder NAME-outputs beside it.
    A bundle itself is never written into: it may be read-only (a download cache), or meant
    to be uploaded as it is. The folder is made when something is first written there."""
    path = Path(path)
    name = path.stem if path.is_file() else path.name
    return path.parent / f"{name}{OUTPUTS_SUFFIX}"


@dataclass(frozen=True)
class Located:
    """Where a run's checkpoint is, where its records are read and where outputs go."""

    checkpoint: Path  # the folder holding config.json, model.safetensors, meta.json
    records: Path  # the folder holding metrics.jsonl and eval.json as trained or packed
    home: Path  # where outputs go by default: the run folder, or a bundle's outputs folder
    name: str  # "best" or "last"


def locate(path: str | Path, *, prefer: str = "best") -> Located:
    """The checkpoint of a run folder, a checkpoint folder or a bundle (see `open_bundle`)."""
    path = Path(path)
    if is_bundle(path):
        folder, description = open_bundle(path)
        name = str(description.get("checkpoint", "best"))
        return Located(folder, folder, bundle_home(path), name)
    if _looks_packed(path):
        raise VaelabError(
            f"{path} looks like a vaelab bundle (its README.md is a vaelab model card) but has "
            f"no {BUNDLE_FILE}, so its files cannot be checked; pack the run again"
        )
    folder = resolve_checkpoint(path, prefer=prefer)
    name = folder.name.strip(".").removesuffix(".old")  # also for the `.best.old` of a crash
    return Located(folder, folder.parent, folder.parent, name)


def _looks_packed(path: Path) -> bool:
    """Whether the folder `path` holds a vaelab model card, as a bundle does."""
    try:
        with open(path / CARD_FILE, encoding="utf-8", errors="replace") as card:
            return f"library_name: {LIBRARY_NAME}" in card.read(2000)
    except OSError:
        return False


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """bundle.json's "files": each file's size and SHA-256, by its path inside `folder`."""
    return {
        name: {"size": (folder / name).stat().st_size, "sha256": file_digest(folder / name)}
        for name in names
    }


def read_description(folder: Path, shown: Path) -> dict[str, Any]:
    """bundle.json of the bundle at `folder` (named `shown` in messages), checked."""
    try:
        description = json.loads((folder / BUNDLE_FILE).read_text())
    except FileNotFoundError:
        raise VaelabError(f"{shown} is not a vaelab bundle: it has no {BUNDLE_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VaelabError(f"{shown}: {BUNDLE_FILE} is corrupt ({error})") from None
    check_header(
        description,
        file=Path(shown) / BUNDLE_FILE,
        owner=shown,
        kind="vaelab bundle",
        format=FORMAT,
        newest=FORMAT_VERSION,
    )
    if not isinstance(description.get("files"), dict):
        raise VaelabError(f"{shown}: {BUNDLE_FILE} lists no files; it is corrupt")
    return description


def verify_files(folder: Path, description: dict[str, Any], shown: Path) -> None:
    """A one-line error for the first listed file that is missing, or whose size or digest
    differs from bundle.json's."""
    for name, expected in description["files"].items():
        path = folder / name
        if not path.is_file():
            raise VaelabError(f"bundle {shown} is missing {name}")
        size, digest = expected.get("size"), expected.get("sha256")
        if path.stat().st_size != size or file_digest(path) != digest:
            raise VaelabError(
                f"bundle {shown}: {name} is corrupt or was changed (its size or SHA-256 "
                f"differs from {BUNDLE_FILE}'s)"
            )


def _unpack(path: Path) -> Path:
    """Unpack the .zip bundle `path` into a temporary folder (once per process)."""
    key = path.resolve()
    if key in _unpacked:
        return _unpacked[key]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise VaelabError(f"{path} is not a readable .zip bundle ({error})") from None
    folder = Path(tempfile.mkdtemp(prefix="vaelab-bundle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with archive:
        for member in archive.infolist():
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
                raise VaelabError(f"{path} holds a file outside the bundle ({member.filename})")
        try:
            archive.extractall(folder)
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise VaelabError(f"{path} is a corrupt .zip bundle ({error})") from None
    if not (folder / BUNDLE_FILE).is_file():  # zipped as one folder, as `pack` does
        inner = [entry for entry in folder.iterdir() if (entry / BUNDLE_FILE).is_file()]
        if len(inner) > 1:
            raise VaelabError(f"{path} holds {len(inner)} bundles; a bundle .zip holds one")
        folder = inner[0] if inner else folder
    _unpacked[key] = folder
    return folder


def open_bundle(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder of the bundle `path` (a folder or a .zip, unpacked) and its
    bundle.json, after checking every file it lists."""
    path = Path(path)
    folder = _unpack(path) if path.is_file() else path
    description = read_description(folder, path)
    verify_files(folder, description, path)
    return folder, description
