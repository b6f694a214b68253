"""`.npy` / `.npz` files of images (and optional labels) as a dataset."""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from vaelab.data.array_factors import FACTOR_KEYS, factors_from_arrays
from vaelab.data.config import DataConfig
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError, plural

log = logging.getLogger(__name__)

IMAGE_KEYS = ("x", "images")
LABEL_KEYS = ("y", "labels")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: empty)
# First bytes of files that get renamed to .npy / .npz by mistake, to say what they are.
OTHER_MAGICS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x80": "a Python pickle",
    b"\x1f\x8b": "a gzip file",
}


def load_array_file(config: DataConfig, *, progress: bool = True) -> SourceData:
    """Images from a `.npy`, or from an `.npz` with key x / images (plus optional y / labels,
    and known factors: see `factors_from_arrays`).

    Accepted image layouts: (N, H, W), (N, C, H, W), channels-last (N, H, W, C) with C in 1 or 3,
    and flat vectors (N, D): a perfect square D = S*S becomes (N, 1, S, S) (784 -> 28x28, rows
    first), any other D stays (N, 1, 1, D). uint8 is divided by 255, uint16 by 65535.
    """
    path = Path(config.dataset).expanduser()
    _check_magic(path)
    images, labels, extras = _read(path)
    x = torch.from_numpy(_images_to_nchw(images, path))
    y = None if labels is None else torch.from_numpy(_check_labels(labels, len(x), path))
    known = factors_from_arrays(extras, len(x), path)
    indices, factors = (None, None) if known is None else known
    log.info("loaded %s of shape %s from %s", plural(len(x), "array"), tuple(x.shape[1:]), path)
    return SourceData(
        pool=Split(x=x, y=y, factors=indices), test=None, class_names=None, factors=factors
    )


def _check_magic(path: Path) -> None:
    """Name what the file is when it is not an .npy or .npz at all (np.load's error misleads)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        reason = " ".join(str(e).split())
        raise VaelabError(f"could not open {path}: {reason}") from None
    if head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGICS):
        return  # np.load goes by the content, so an .npz saved as .npy loads too
    kind = path.suffix.lower()
    found = next((what for magic, what in OTHER_MAGICS.items() if head.startswith(magic)), None)
    if found:
        found = f"it looks like {found}"
    else:
        found = f"it starts with {head[:6]!r}" if head else "it is empty"
    save = "np.save" if kind == ".npy" else "np.savez"
    raise VaelabError(f"{path} is not a NumPy {kind} file ({found}); save the arrays with {save}")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(images, labels or None, the factor arrays present) as loaded, never unpickling
    anything."""
    try:
        # Opening the file ourselves closes it even when np.load fails on a broken .npz.
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded, None, {}
            keys = list(loaded.files)
            if not keys:
                raise VaelabError(f"{path} holds no arrays; save the images with np.savez(x=...)")
            image_key = _pick(keys, IMAGE_KEYS) or (keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise VaelabError(
                    f"{path} holds arrays {keys}; name the images 'x' (or 'images') and the "
                    "labels 'y' (or 'labels')"
                )
            label_key = _pick(keys, LABEL_KEYS)
            extras = {key: loaded[key] for key in FACTOR_KEYS if key in keys}
            return loaded[image_key], None if label_key is None else loaded[label_key], extras
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())  # keep the message on one line
        if "allow_pickle" in reason:
            raise VaelabError(
                f"{path} holds object (pickled) arrays, which vaelab never loads; save plain "
                "numeric arrays with np.save / np.savez"
            ) from None
        raise VaelabError(
            f"could not read {path} as a NumPy file ({reason}); re-save the arrays with np.save "
            "/ np.savez"
        ) from None


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def _to_float(images: np.ndarray, path: Path) -> np.ndarray:
    """float32 values: uint8 / 255, uint16 / 65535, bool -> 0/1, floats as they are."""
    kind = images.dtype.kind
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    if images.dtype == np.uint16:
        return images.astype(np.float32) / 65535
    if kind == "b" or kind == "f":
        return images.astype(np.float32)
    if kind in "iu" and images.size and images.min() >= 0 and images.max() <= 1:
        return images.astype(np.float32)  # binary data stored as integers
    raise VaelabError(
        f"{path} has images of dtype {images.dtype}; use uint8 (0..255), uint16, bool or floats"
    )


def _images_to_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, C, H, W) float32 from (N, D), (N, H, W), (N, C, H, W) or channels-last (N, H, W, C)."""
    if images.ndim not in (2, 3, 4) or images.shape[0] == 0:
        raise VaelabError(
            f"{path} has images of shape {images.shape}; expected N > 0 samples shaped (N, D), "
            "(N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1 or 3"
        )
    x = _to_float(images, path)
    if images.ndim == 2:
        x = _unflatten(x, path)
    elif images.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise VaelabError(
                f"{path} has images of shape {images.shape}: neither axis 1 nor axis 3 holds 1 or "
                "3 channels; save them as (N, C, H, W) or (N, H, W, C) with C = 1 or 3"
            )
        x = x.transpose(0, 3, 1, 2)  # channels-last (N, H, W, C) -> (N, C, H, W)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise VaelabError(f"{path} has {bad} non-finite values (NaN or inf); clean the data first")
    # Values outside [0, 1] are fine for a Gaussian decoder; a Bernoulli model rejects them.
    return np.ascontiguousarray(x, dtype=np.float32)


def _unflatten(x: np.ndarray, path: Path) -> np.ndarray:
    """(N, D) -> (N, 1, S, S) when D = S*S (row-major, like flattened MNIST), else (N, 1, 1, D)."""
    n, d = x.shape
    side = math.isqrt(d)
    if side * side == d:
        log.info(
            "%s holds a 2-D array %s, flat vectors of length %d: read as %dx%d grayscale "
            "images, rows first",
            path,
            x.shape,
            d,
            side,
            side,
        )
        return x.reshape(n, 1, side, side)
    # Rarely what an image toolkit's user meant (conv networks and figures need 2-D images),
    # so a warning, which --quiet does not hide.
    log.warning(
        "%s holds a 2-D array %s and %d is not a square: read as 1x%d images, shape "
        "(1, 1, %d); save images as (N, H, W) or (N, C, H, W) to keep their shape",
        path,
        x.shape,
        d,
        d,
        d,
    )
    return x.reshape(n, 1, 1, d)


def _check_labels(labels: np.ndarray, n: int, path: Path) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise VaelabError(
            f"{path} has labels of shape {labels.shape} and dtype {labels.dtype}; "
            f"expected {n} integers, one per image"
        )
    return labels.astype(np.int64)
