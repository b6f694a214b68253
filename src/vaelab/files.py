"""Small file-system helpers that never leave a half-written file in place of a good one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaelab.errors import VaelabError


def cache_root() -> Path:
    """vaelab's cache folder (downloads, classifiers): $VAELAB_CACHE, else
    ${XDG_CACHE_HOME:-~/.cache}/vaelab."""
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "vaelab"


def _default_mode(is_dir: bool) -> int:
    """The permissions a plain open()/mkdir() would give, honouring the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if is_dir else 0o666) & ~umask


def make_private_temp_public(path: Path) -> None:
    """mkstemp/mkdtemp create owner-only entries; give them the usual permissions instead."""
    os.chmod(path, _default_mode(Path(path).is_dir()))


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` to write; on success it is flushed to disk and renamed
    over `path`, on any failure (or Ctrl-C) removed, so `path` is never half-written.

        with atomic_path(out, suffix=".png") as tmp:
            picture.save(tmp, format="PNG")
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        make_private_temp_public(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_error(path: str | Path, error: OSError) -> VaelabError:
    """A one-line error for an OSError while writing `path`, naming `path` (never a temporary
    file): permissions, a full disk, a read-only file system."""
    reason = error.strerror or " ".join(str(error).split())
    return VaelabError(f"cannot write {path}: {reason}")
