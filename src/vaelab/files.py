"""Small file-system helpers that never leave a half-written file in place of a good one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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
    over `path`, on any failure (or Ctrl-C) removed, so `path` is never half-written. A missing
    folder of `path` is made (one level), for outputs whose folder is made on first use.

        with atomic_path(out, suffix=".png") as tmp:
            picture.save(tmp, format="PNG")
    """
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir()  # one level: a bundle's outputs folder, made on its first write
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


@contextmanager
def folder_made_for(folder: Path) -> Iterator[Path]:
    """`folder`, made for the writes in the block when missing (one level), and removed again
    when the block fails and leaves it empty: a failed command leaves no empty folder."""
    made = not folder.exists()
    if made:
        try:
            folder.mkdir()
        except OSError as error:
            raise write_error(folder, error) from None
    try:
        yield folder
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def check_folder_of(path: Path) -> None:
    """A one-line error unless `path`'s folder exists (and is a folder, not a file)."""
    folder = Path(path).parent
    if folder.is_dir():
        return
    if folder.exists():
        raise VaelabError(f"cannot write {path}: {folder} is a file, not a folder")
    raise VaelabError(f"cannot write {path}: folder {folder} does not exist")


def check_replaceable(
    path: Path, *, replace_if: Callable[[Path], bool], flag: str = "--out"
) -> None:
    """A one-line error unless `atomic_folder` may write `path`: its parent exists, and it is
    absent, an empty folder, or a folder `replace_if` accepts."""
    path = Path(path)
    try:
        replaceable = path.is_dir() and (not any(path.iterdir()) or replace_if(path))
    except FileNotFoundError:  # gone while looked at: another process is replacing it
        replaceable = True
    if path.exists() and not replaceable:
        raise VaelabError(f"{path} already exists and is not one to replace; choose another {flag}")
    check_folder_of(path)


@contextmanager
def atomic_folder(
    path: str | Path, *, replace_if: Callable[[Path], bool] = lambda folder: False
) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; on success it takes `path`'s place, on any
    failure it is removed, so `path` is never half-written.

    An existing `path` is replaced only when it is empty or `replace_if(path)` says it is a
    folder of the same kind (an earlier export); otherwise a one-line error, before any work.
    """
    path = Path(path)
    check_replaceable(path, replace_if=replace_if)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as error:
        raise write_error(path, error) from None
    try:
        make_private_temp_public(tmp)
        yield tmp
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the folder `tmp` to `path`, replacing what is there. Two renames, not one atomic
    exchange: should another process write `path` between them, this one gives way with a
    one-line error, and no folder is left behind under a temporary name."""
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):  # put the earlier folder back, unless replaced
            os.rename(old, path)
        raise VaelabError(
            f"cannot write {path}: {error.strerror or error} (is another process writing it?)"
        ) from None
    finally:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_error(path: str | Path, error: OSError) -> VaelabError:
    """A one-line error for an OSError while writing `path`, naming `path` (never a temporary
    file): permissions, a full disk, a read-only file system."""
    reason = error.strerror or " ".join(str(error).split())
    return VaelabError(f"cannot write {path}: {reason}")
