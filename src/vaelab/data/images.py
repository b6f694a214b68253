"""Image files: a folder of images as a dataset, and single files for `vaelab interpolate`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vaelab.data.config import DataConfig
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# Modes with more than 8 bits per pixel, read as float and divided by their full scale.
WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0,
              "I": 65535.0, "F": 1.0}  # fmt: skip


def load_image_file(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """One PNG/JPEG/... image as (C, H, W) float32 in [0, 1] matching `shape` = (C, H, W)."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise VaelabError(f"images must have 1 or 3 channels, asked for {channels}")
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise VaelabError(f"image file {path} {problem}; pass a PNG or JPEG file")
    array = read_image(path, size=(height, width))
    return torch.from_numpy(_to_channels(array, channels))


def read_image(path: Path, *, size: tuple[int, int] | None) -> np.ndarray:
    """(1 or 3, H, W) float32 in [0, 1]: grayscale images keep one channel, others become RGB.

    `size` (H, W) resizes with Lanczos; None keeps the file's size.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _decode(image, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split())  # keep the message on one line
        raise VaelabError(f"could not read image {path}: {reason}; remove or replace it") from None


def _decode(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    if image.mode in WIDE_MODES:
        scale = WIDE_MODES[image.mode]
        image = Image.fromarray(np.asarray(image, dtype=np.float32) / scale)  # mode "F"
    elif image.mode in GRAY_MODES:
        image = image.convert("L")
    elif image.mode != "RGB":
        was_palette = image.mode in ("P", "PA")
        image = image.convert("RGBA" if "transparency" in image.info else "RGB").convert("RGB")
        if was_palette and _is_gray(image):  # e.g. a GIF with a gray palette
            image = image.convert("L")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    scale = 1.0 if image.mode == "F" else 255.0
    array = np.clip(np.asarray(image, dtype=np.float32) / scale, 0.0, 1.0)  # Lanczos overshoots
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()


def _is_gray(image: Image.Image) -> bool:
    r, g, b = image.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """(C, H, W) -> (channels, H, W); RGB -> gray uses ITU-R 601 luma like PIL's convert("L")."""
    if array.shape[0] == channels:
        return np.ascontiguousarray(array)
    if channels == 3:
        return np.repeat(array, 3, axis=0)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.tensordot(luma, array, axes=1)[None].astype(np.float32)


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip


def _find_files(folder: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """(files, labels, class names): sub-folders with images are classes, else it is flat."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [(d.name, _list_images(d)) for d in subfolders]
    classes = [(name, files) for name, files in classes if files]
    if not classes:
        return _list_images(folder), None, None
    if _list_images(folder):
        log.warning("%s has class sub-folders; ignoring the images directly inside it", folder)
    files = [f for _, files in classes for f in files]
    labels = [k for k, (_, files) in enumerate(classes) for _ in files]
    return files, labels, tuple(name for name, _ in classes)


def load_image_folder(config: DataConfig, *, progress: bool = True) -> SourceData:
    """Every image in the folder `config.dataset` as one (N, C, H, W) tensor."""
    folder = Path(config.dataset).expanduser()
    files, labels, class_names = _find_files(folder)
    if not files:
        raise VaelabError(
            f"no images in {folder}: expected {', '.join(sorted(IMAGE_SUFFIXES))} files, "
            "directly or in one sub-folder per class"
        )
    arrays, first = [], None
    bar = tqdm(files, desc=f"reading {folder.name}", unit="img", disable=not progress, leave=False)
    for path in bar:  # one pass at load time; the result is a single tensor
        array = read_image(path, size=config.image_size)
        if first is None:
            first = (path, array.shape[1:])
        elif config.image_size is None and array.shape[1:] != first[1]:
            (h0, w0), (h1, w1) = first[1], array.shape[1:]
            raise VaelabError(
                f"images in {folder} have different sizes (e.g. {h0}x{w0} in {first[0].name} and "
                f"{h1}x{w1} in {path.name}); pass --image-size H W (or --image-size N) to resize "
                "them"
            )
        arrays.append(array)
    channels = config.channels or max(a.shape[0] for a in arrays)  # gray only if all are gray
    x = torch.from_numpy(np.stack([_to_channels(a, channels) for a in arrays]))
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    log.info("loaded %d images of shape %s from %s", len(x), tuple(x.shape[1:]), folder)
    return SourceData(pool=Split(x=x, y=y), test=None, class_names=class_names)
