"""Reader for IDX files, the MNIST format, plain or gzipped.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code, the number of
dimensions, then each dimension as a big-endian uint32, then the values big-endian, row-major.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from vaelab.errors import VaelabError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file; a `.gz` suffix means gzipped."""
    return parse_idx(read_idx_bytes(path), str(path))


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed bytes of an IDX file (gunzipped when the suffix is `.gz`)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        reason = " ".join(str(e).split())
        raise VaelabError(f"could not read IDX file {path}: {reason}; replace the file") from None


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode IDX bytes; `name` is only used in error messages."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise VaelabError(f"{name} is not an IDX file (bad magic number); replace the file")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise VaelabError(f"IDX file {name} has a truncated header; replace the file")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        problem = "is truncated" if len(raw) - header < expected else "has trailing bytes"
        raise VaelabError(
            f"IDX file {name} {problem}: {len(raw) - header} data bytes for shape {dims}, "
            f"expected {expected}; replace the file"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)
