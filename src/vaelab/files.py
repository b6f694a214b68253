"""Small file-system helpers that never leave a half-written file in place of a good one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        make_private_temp_public(Path(tmp))
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
