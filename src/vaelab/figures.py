"""Image grids as PNG files: samples, reconstructions, interpolation strips."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaelab.errors import VaelabError
from vaelab.files import make_private_temp_public

MIN_CELL_PIXELS = 56  # small images (8x8 digits) are enlarged so a grid is readable


def to_display(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) as values in [0, 1].

    [0, 1] data is clamped, so a Gaussian decoder's few overshooting pixels do not change the
    contrast of the whole grid; other data (e.g. standardised arrays) is min-max scaled.
    """
    images = torch.nan_to_num(images.detach().float().cpu())  # a diverged model's NaN -> 0
    in_unit_range = ((images >= -0.05) & (images <= 1.05)).float().mean()
    if in_unit_range >= 0.99:
        return images.clamp(0.0, 1.0)
    low, high = float(images.min()), float(images.max())
    return (images - low) / max(high - low, 1e-12)


def image_grid(images: torch.Tensor, *, columns: int, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images row by row into one uint8 array (rows*H, columns*W, C)."""
    images = to_display(images)
    n, channels, height, width = images.shape
    rows = max(1, -(-n // columns))
    grid = torch.ones(channels, rows * (height + padding) + padding,
                      columns * (width + padding) + padding)  # fmt: skip
    for i in range(n):
        top = padding + (i // columns) * (height + padding)
        left = padding + (i % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[i]
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if channels == 1 else array


def save_image_grid(
    images: torch.Tensor, path: str | Path, *, columns: int, padding: int = 2
) -> Path:
    """Write images (N, C, H, W) as a PNG grid at `path` (atomically); return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VaelabError(f"output {path} must be a .png file")
    if not path.parent.is_dir():
        raise VaelabError(f"output folder {path.parent} does not exist")
    picture = Image.fromarray(image_grid(images, columns=columns, padding=padding))
    scale = max(1, MIN_CELL_PIXELS // max(images.shape[-2], images.shape[-1]))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        picture.save(tmp, format="PNG")
        make_private_temp_public(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
