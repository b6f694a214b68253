"""Pictures as PNG files: images tiled into grids (samples, reconstructions, interpolation
strips) and matplotlib figures, each written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vaelab.errors import VaelabError
from vaelab.files import atomic_path, write_error

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIN_CELL_PIXELS = 56  # small images (8x8 digits) are enlarged so a grid is readable
# Pillow refuses to open larger images (a decompression-bomb guard), so nothing bigger is written.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def spread_indices(count: int, n: int) -> torch.Tensor:
    """min(n, count) indices spread evenly over range(count), the first and last included.

    Figures show these rather than the first n examples: a split stored class by class (an
    image folder, read one class folder after another) would otherwise show one class only.
    """
    if count <= 0 or n <= 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.linspace(0, count - 1, min(n, count), dtype=torch.float64).round().long().unique()


def to_display(
    images: torch.Tensor, *, value_range: tuple[float, float] | None = None
) -> torch.Tensor:
    """Images (N, C, H, W) as values in [0, 1].

    With `value_range` (low, high), e.g. the range of the training data, low maps to 0 and high
    to 1, clamped: a background at the data's minimum stays black whatever the model draws.
    Without it, [0, 1] data is clamped, so a Gaussian decoder's few overshooting pixels do not
    change the contrast of the whole grid; other data (e.g. standardised arrays) is min-max
    scaled.
    """
    images = torch.nan_to_num(images.detach().float().cpu())  # a diverged model's NaN -> 0
    if value_range is not None:
        low, high = value_range
        return ((images - low) / max(high - low, 1e-12)).clamp(0.0, 1.0)
    in_unit_range = ((images >= -0.05) & (images <= 1.05)).float().mean()
    if in_unit_range >= 0.99:
        return images.clamp(0.0, 1.0)
    low, high = float(images.min()), float(images.max())
    return (images - low) / max(high - low, 1e-12)


def mosaic(
    images: torch.Tensor,
    rows: int,
    columns: int,
    *,
    padding: int = 1,
    border: int | None = None,
    slots: torch.Tensor | Sequence[int] | None = None,
) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into a rows x columns grid on a white background.

    Image i goes into cell `slots[i]` (counted row by row; default i); other cells stay white.
    Cells are `padding` pixels apart, inside a border of `border` pixels (default `padding`).
    Returns float32 (rows * (H + padding) - padding + 2 * border, likewise for W), with a last
    axis of C only for more than one channel.
    """
    border = padding if border is None else border
    n, channels, height, width = images.shape
    cells = list(range(n)) if slots is None else [int(cell) for cell in slots]
    if cells and max(cells) >= rows * columns:
        raise ValueError(f"{n} images do not fit a {rows}x{columns} mosaic")
    canvas = torch.ones(
        channels,
        rows * (height + padding) - padding + 2 * border,
        columns * (width + padding) - padding + 2 * border,
    )
    for image, cell in zip(images, cells, strict=True):
        top = border + (cell // columns) * (height + padding)
        left = border + (cell % columns) * (width + padding)
        canvas[:, top : top + height, left : left + width] = image
    array = canvas.permute(1, 2, 0).numpy()
    return array[:, :, 0] if channels == 1 else array


def paired_slots(n: int, *, columns: int) -> torch.Tensor:
    """Grid cells for n (top, bottom) pairs shown as row pairs of `columns` cells: (2n,) indices.

    The first n slots are the top images (rows 0, 2, 4, ...), the last n the bottom ones right
    below them (rows 1, 3, 5, ...), so pair i stays in one column however many pairs there are.
    """
    i = torch.arange(n)
    top = (i // columns) * 2 * columns + i % columns
    return torch.cat([top, top + columns])


def _grid_rows(n: int, columns: int, slots: torch.Tensor | None) -> int:
    cells = n if slots is None or n == 0 else int(slots.max()) + 1
    return max(1, -(-cells // columns))


def image_grid(
    images: torch.Tensor,
    *,
    columns: int,
    padding: int = 2,
    value_range: tuple[float, float] | None = None,
    slots: torch.Tensor | None = None,
) -> np.ndarray:
    """Tile (N, C, H, W) images into one uint8 array (rows*H, columns*W, C), with `mosaic`.

    `value_range` is passed to `to_display`; see `mosaic` for `slots`.
    """
    rows = _grid_rows(len(images), columns, slots)
    shown = to_display(images, value_range=value_range)
    array = mosaic(shown, rows, columns, padding=padding, slots=slots)
    return torch.from_numpy(array).mul(255).round().to(torch.uint8).numpy()


def _scale(images: torch.Tensor) -> int:
    return max(1, MIN_CELL_PIXELS // max(images.shape[-2], images.shape[-1]))


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    *,
    columns: int,
    padding: int = 2,
    value_range: tuple[float, float] | None = None,
    slots: torch.Tensor | None = None,
) -> Path:
    """Write images (N, C, H, W) as a PNG grid at `path` (atomically); return the path.

    See `image_grid` for `value_range` and `slots`. Raises VaelabError, naming `path`, when the
    picture would be too large to open or the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VaelabError(f"output {path} must be a .png file")
    if not path.parent.is_dir() and not path.parent.parent.is_dir():  # one level is made
        raise VaelabError(f"output folder {path.parent} does not exist")
    scale = _scale(images)
    rows = _grid_rows(len(images), columns, slots)
    height, width = images.shape[-2:]
    grid_h, grid_w = rows * (height + padding) + padding, columns * (width + padding) + padding
    if grid_h * grid_w * scale * scale > MAX_PIXELS:
        raise VaelabError(
            f"a grid of {len(images)} images of {height}x{width} would be "
            f"{grid_w * scale}x{grid_h * scale} pixels, too large for image viewers; "
            "ask for fewer images"
        )
    array = image_grid(
        images, columns=columns, padding=padding, value_range=value_range, slots=slots
    )
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            picture.save(tmp, format="PNG")
    except OSError as error:
        raise write_error(path, error) from None
    return path


def save_image_pairs(
    top: torch.Tensor,
    bottom: torch.Tensor,
    path: str | Path,
    *,
    columns: int = 10,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """Write n (top, bottom) image pairs, e.g. originals above their reconstructions, as row
    pairs that wrap after `columns` pairs (fewer for fewer pairs); return the path."""
    if len(top) != len(bottom):
        raise ValueError(f"top has {len(top)} images but bottom has {len(bottom)}")
    columns = max(1, min(columns, len(top)))
    slots = paired_slots(len(top), columns=columns)
    images = torch.cat([top, bottom])
    return save_image_grid(images, path, columns=columns, value_range=value_range, slots=slots)


def save_figure(fig: Figure, path: str | Path, *, dpi: float | None = None) -> Path:
    """Write a matplotlib figure as a PNG at `path` (atomically, at `dpi`, default the
    figure's own); return the path. An OSError becomes a VaelabError naming `path`."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi if dpi is None else dpi)
    except OSError as error:
        raise write_error(path, error) from None
    return path
