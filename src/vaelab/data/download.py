"""Download one file from a list of mirrors, md5-verified, never leaving a partial file behind."""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vaelab.files import atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Resource:
    """A downloadable file: its name, md5 of its bytes, and base URLs to try in order."""

    filename: str
    md5: str
    mirrors: tuple[str, ...]


class DownloadFailed(Exception):
    """Every mirror failed; `reason` is the last failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def download(
    resource: Resource, folder: Path, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Fetch `resource` into `folder` from the first mirror that works; returns the final path.

    Raises DownloadFailed with the last reason when no mirror gives a complete, verified file;
    then (or on Ctrl-C) the folders this call created are removed again, if they are empty.
    """
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _from_mirrors(resource, folder, progress, timeout)
    except BaseException:
        _remove_empty(created)
        raise


def _from_mirrors(resource: Resource, folder: Path, progress: bool, timeout: float) -> Path:
    reason = "no mirrors configured"
    for base in resource.mirrors:
        url = base.rstrip("/") + "/" + resource.filename
        try:
            return _fetch(url, folder / resource.filename, resource.md5, progress, timeout)
        except _MirrorFailed as e:
            reason = f"{url}: {e}"
            # Debug only: the caller's error carries the last reason, so a failed download is
            # one line on the command line rather than one warning per mirror.
            log.debug("download failed: %s", reason)
    raise DownloadFailed(reason)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (innermost first) while they are empty: an empty cache folder left by a
    failed download would look like a cache that is there. A folder holding anything stays."""
    for path in folders:
        try:
            path.rmdir()  # only ever removes an empty folder
        except OSError:
            return


class _MirrorFailed(Exception):
    pass


def _fetch(url: str, dest: Path, md5: str, progress: bool, timeout: float) -> Path:
    """Stream `url` into a `*.part` file beside `dest`, check size and md5, then move it in."""
    try:
        with atomic_path(dest, suffix=".part") as part, open(part, "wb") as out:
            digest, size, expected = _stream(url, out, progress, timeout)
            if expected is not None and size != expected:
                raise _MirrorFailed(f"connection closed after {size} of {expected} bytes")
            if digest != md5:
                raise _MirrorFailed(f"md5 mismatch (got {digest}, expected {md5})")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise _MirrorFailed(_describe(e)) from None
    log.info("downloaded %s", dest)
    return dest


def _stream(url: str, out, progress: bool, timeout: float) -> tuple[str, int, int | None]:
    """Copy the response body into `out`; returns (md5 hex, bytes read, Content-Length or None)."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        name = url.rsplit("/", 1)[-1]
        with tqdm(
            total=expected, unit="B", unit_scale=True, desc=name, disable=not progress
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    return digest.hexdigest(), size, expected


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, http.client.IncompleteRead):
        return f"connection closed after {len(error.partial)} bytes, {error.expected} missing"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
