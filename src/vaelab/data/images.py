"""Image files: a folder of images as a dataset, and single files for `vaelab interpolate`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vaelab.data.config import DataConfig
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError, plural

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
GRAY_MODES = frozenset({"1", "L", "LA", "La"})
ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# Modes with more than 8 bits per pixel, read as float and divided by their full scale.
WIDE_MODES = {
    "I;16": 65535.0,
    "I;16B": 65535.0,
    "I;16L": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}


def load_image_file(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """One PNG/JPEG/... image as (C, H, W) float32 in [0, 1] matching `shape` = (C, H, W).

    Transparent pixels are composited onto white, as a browser shows them (see `read_image`).
    """
    channels, height, width = shape
    if channels not in (1, 3):
        raise VaelabError(f"images must have 1 or 3 channels, asked for {channels}")
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise VaelabError(f"image file {path} {problem}; pass a PNG or JPEG file")
    array = read_image(path, size=(height, width), fix="pass a PNG or JPEG file")
    with Image.open(path) as image:  # read_image has checked that it opens
        if image.size != (width, height):
            log.info("%s is %dx%d; resized to %dx%d for this run", path, *image.size, width, height)
    return torch.from_numpy(_converted(array, channels, str(path)))


def image_to_tensor(image: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """An opened PIL image as (C, H, W) float32 in [0, 1] matching `shape`, converted the way
    the dataset loader converts files (transparency onto white, Lanczos resize)."""
    channels, height, width = shape
    name = getattr(image, "filename", "") or "the image"
    return torch.from_numpy(_converted(_decode(image, (height, width)), channels, name))


def read_image(
    path: Path, *, size: tuple[int, int] | None, fix: str = "remove or replace it"
) -> np.ndarray:
    """(1 or 3, H, W) float32 in [0, 1]: grayscale images keep one channel, others become RGB.

    Images with transparency (an alpha channel, or a transparent palette entry or colour) are
    composited onto a white background first, as a browser shows them: a black glyph on a
    transparent background reads as black on white. `size` (H, W) resizes with Lanczos; None
    keeps the file's size. `fix` ends the error message for an unreadable file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _decode(image, size)
    except UnidentifiedImageError:
        raise VaelabError(
            f"{path} is not an image file PIL can read (PNG, JPEG, BMP, GIF, ...); {fix}"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split())  # keep the message on one line
        raise VaelabError(f"could not read image {path}: {reason}; {fix}") from None


def _decode(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    if image.mode in WIDE_MODES:
        image = _wide_to_float(image)
    else:
        gray = image.mode in GRAY_MODES
        palette = image.mode in ("P", "PA")
        if image.mode in ALPHA_MODES or "transparency" in image.info:
            image = _on_white(image)
        elif image.mode not in ("L", "RGB"):
            image = image.convert("L" if gray else "RGB")
        if image.mode == "RGB" and (gray or (palette and _is_gray(image))):
            image = image.convert("L")  # exact for R = G = B; e.g. a GIF with a gray palette
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    scale = 1.0 if image.mode == "F" else 255.0
    array = np.clip(np.asarray(image, dtype=np.float32) / scale, 0.0, 1.0)  # Lanczos overshoots
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()


def _wide_to_float(image: Image.Image) -> Image.Image:
    """16/32-bit and float images as mode "F" in [0, 1]; a transparent value becomes white."""
    scale = WIDE_MODES[image.mode]
    array = np.asarray(image, dtype=np.float32) / scale
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):
        array[np.asarray(image) == transparent] = 1.0
    return Image.fromarray(array)  # mode "F"


def _on_white(image: Image.Image) -> Image.Image:
    """RGB of `image` composited over an opaque white background by its alpha."""
    if image.mode in ("La", "RGBa"):  # premultiplied: PIL converts these only to their plain mode
        image = image.convert(image.mode.replace("a", "A"))
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


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


def _converted(array: np.ndarray, channels: int, name: str) -> np.ndarray:
    """`_to_channels`, saying so when the image had to change colour to fit the run."""
    if array.shape[0] != channels:
        log.info(
            "%s is %s; converted to %s for this %d-channel run",
            name,
            _COLOURS[array.shape[0]],
            "grayscale (luma)" if channels == 1 else "RGB (gray in each channel)",
            channels,
        )
    return _to_channels(array, channels)


_COLOURS = {1: "grayscale", 3: "in colour"}  # RGBA and palette images decode to colour too


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _list_images(folder: Path) -> list[Path]:
    """Images directly inside `folder`, sorted."""
    return sorted(p for p in folder.iterdir() if _is_image(p) and p.is_file())


def _list_images_recursively(folder: Path) -> list[Path]:
    """Images in `folder` and all its sub-folders, skipping hidden ones; sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder):  # symlinked folders are not entered: no loops
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, name) for name in files if _is_image(Path(name))]
    return sorted(p for p in found if p.is_file())


def _find_files(folder: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None, int]:
    """(files, labels, class names, images ignored at the top level).

    Each top-level sub-folder holding images, at any depth, is a class; without such
    sub-folders, the images directly in `folder` are an unlabelled, flat dataset.
    """
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [(d.name, _list_images_recursively(d)) for d in subfolders]
    classes = [(name, files) for name, files in classes if files]
    if not classes:
        return _list_images(folder), None, None, 0
    files = [f for _, files in classes for f in files]
    labels = [k for k, (_, files) in enumerate(classes) for _ in files]
    return files, labels, tuple(name for name, _ in classes), len(_list_images(folder))


def load_image_folder(config: DataConfig, *, progress: bool = True) -> SourceData:
    """Every image in the folder `config.dataset` as one (N, C, H, W) tensor.

    Layouts: one sub-folder per class (label = the top-level sub-folder, images found at any
    depth below it), or a flat folder of images without labels. Files are in sorted path order,
    so a class-folder dataset is sorted by class.
    """
    folder = Path(config.dataset).expanduser()
    files, labels, class_names, ignored = _find_files(folder)
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
            name0, name1 = first[0].relative_to(folder), path.relative_to(folder)
            raise VaelabError(
                f"images in {folder} have different sizes ({name0} is {w0} wide × {h0} high, "
                f"{name1} is {w1} wide × {h1} high); resize them all with --image-size H W "
                "(image_size in a config)"
            )
        arrays.append(array)
    channels = config.channels or max(a.shape[0] for a in arrays)  # gray only if all are gray
    x = torch.from_numpy(np.stack([_to_channels(a, channels) for a in arrays]))
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    log.info("loaded %s of shape %s from %s", plural(len(x), "image"), tuple(x.shape[1:]), folder)
    if ignored:  # after loading, so that a failing load does not warn before its error
        log.warning(
            "ignored %s directly inside %s: it has class sub-folders",
            plural(ignored, "image"),
            folder,
        )
    return SourceData(pool=Split(x=x, y=y), test=None, class_names=class_names)
