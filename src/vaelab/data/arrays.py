"""`.npy` / `.npz` files of images (and optional labels) as a dataset."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from vaelab.data.config import DataConfig
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("x", "images")
LABEL_KEYS = ("y", "labels")


def load_array_file(config: DataConfig, *, progress: bool = True) -> SourceData:
    """Images from a `.npy`, or from an `.npz` with key x / images (plus optional y / labels)."""
    path = Path(config.dataset).expanduser()
    images, labels = _read(path)
    x = torch.from_numpy(_images_to_nchw(images, path))
    y = None if labels is None else torch.from_numpy(_check_labels(labels, len(x), path))
    log.info("loaded %d arrays of shape %s from %s", len(x), tuple(x.shape[1:]), path)
    return SourceData(pool=Split(x=x, y=y), test=None, class_names=None)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) as loaded, never unpickling anything."""
    try:
        # Opening the file ourselves closes it even when np.load fails on a broken .npz.
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded, None
            keys = list(loaded.files)
            image_key = _pick(keys, IMAGE_KEYS) or (keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise VaelabError(
                    f"{path} holds arrays {keys}; name the images 'x' (or 'images') and the "
                    "labels 'y' (or 'labels')"
                )
            label_key = _pick(keys, LABEL_KEYS)
            return loaded[image_key], None if label_key is None else loaded[label_key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())  # keep the message on one line
        raise VaelabError(
            f"could not read {path} as a NumPy file ({reason}); save plain numeric arrays with "
            "np.save / np.savez (object or pickled arrays are refused)"
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
        f"{path} has images of dtype {images.dtype}; use uint8 (0..255), bool, or floats in [0, 1]"
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
        x = x[:, None, None, :]  # (N, D) -> (N, 1, 1, D)
    elif images.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise VaelabError(f"{path} has images of shape {images.shape}; need 1 or 3 channels")
        x = x.transpose(0, 3, 1, 2)  # channels-last (N, H, W, C) -> (N, C, H, W)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise VaelabError(f"{path} has {bad} non-finite values (NaN or inf); clean the data first")
    # Values outside [0, 1] are fine for a Gaussian decoder; a Bernoulli model rejects them.
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_labels(labels: np.ndarray, n: int, path: Path) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise VaelabError(
            f"{path} has labels of shape {labels.shape} and dtype {labels.dtype}; "
            f"expected {n} integers, one per image"
        )
    return labels.astype(np.int64)
