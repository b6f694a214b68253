"""`--dataset shapes`: binary images of one white shape on black over a known factor grid.

The factor grid is that of dSprites (Matthey, Higgins, Hassabis & Lerchner 2017, "dSprites:
Disentanglement testing Sprites dataset", https://github.com/deepmind/dsprites-dataset): shape
(square, ellipse, heart), scale (6 values in [0.5, 1]), orientation, and x and y position. The
images are a rendering of that grid made by vaelab, not the original file: outlines, sizes and
positions differ in detail, so absolute scores (likelihoods, disentanglement metrics) can differ
from published dSprites numbers. Compare runs on this set with each other.

Geometry, in pixels of an S x S image whose pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5): the shape's centre moves over [m S, (1 - m) S] in x and in y (x = 0 at the
left, y = 0 at the top: a larger y index is lower in the image), and at scale 1 each shape fits in
a disc of radius R = m S - 0.75 around its centre, so no orientation or position reaches the
border rows and columns. A pixel is white when the shape's implicit function, at the pixel centre
taken into the shape's own un-rotated, un-scaled frame (u right, v up, unit disc), is <= 0:
square max(|u|, |v|) <= 0.7, ellipse u^2 + (2 v)^2 <= 1, heart (U^2 + V^2 - 1)^3 - U^2 V^3 <= 0
with U = 1.25 u, V = 1.25 v + 0.25 (the heart's smallest enclosing circle is the unit disc).
Orientation turns the shape counter-clockwise as shown.

Only exactly rounded IEEE operations (+, -, *, comparisons) on float64 touch the pixels, after
cos / sin are taken from tables rounded to 12 decimals (libm's can differ by an ulp between
machines), so every machine renders the same bits. Nothing is random.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vaelab.data.config import DataConfig
from vaelab.data.factors import Factors
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
DEFAULT_SIZE = 64  # dSprites' own grid
CHUNK_ROWS = 8192  # images rendered at once: bounds the float64 temporaries to tens of MB


@dataclass(frozen=True)
class ShapeGrid:
    """The factor grid and geometry of one image size (see the module docstring)."""

    size: int  # images are size x size pixels
    scales: int  # linearly spaced in [0.5, 1]
    orientations: int  # k * 2 pi / orientations, k = 0 .. orientations - 1
    positions: int  # of x and of y each, linearly spaced in [0, 1]
    margin: float  # m: the centre moves over [m, 1 - m] of the side

    @property
    def sizes(self) -> tuple[int, ...]:
        """Values per factor, in FACTOR_NAMES order."""
        n = self.positions
        return (len(SHAPE_NAMES), self.scales, self.orientations, n, n)

    @property
    def num_images(self) -> int:
        return math.prod(self.sizes)

    @property
    def radius(self) -> float:
        """R: the radius in pixels of the disc that holds every shape at scale 1."""
        return self.margin * self.size - 0.75  # the disc stops 0.25 px short of the border pixels

    @property
    def factors(self) -> Factors:
        """The grid as `Factors`: shape values are the class indices 0, 1, 2."""
        values = (
            tuple(float(k) for k in range(len(SHAPE_NAMES))),
            tuple(_linspace(0.5, 1.0, self.scales)),
            tuple(2 * math.pi * k / self.orientations for k in range(self.orientations)),
            tuple(_linspace(0.0, 1.0, self.positions)),
            tuple(_linspace(0.0, 1.0, self.positions)),
        )
        return Factors(names=FACTOR_NAMES, values=values, categorical=(True,) + (False,) * 4)


# 64: dSprites' grid (3 x 6 x 40 x 32 x 32). 32: the CPU grid, at most 20 values per factor (the
# MIG metric's 20 bins). 16: a tiny grid for tests and quick trials; its centres move over the
# middle half so that the smallest shapes still cover a few pixels.
GRIDS: dict[int, ShapeGrid] = {
    64: ShapeGrid(size=64, scales=6, orientations=40, positions=32, margin=1 / 8),
    # the CPU grid: the full grid's shapes at their size in pixels, over the middle half
    32: ShapeGrid(size=32, scales=6, orientations=16, positions=16, margin=1 / 4),
    16: ShapeGrid(size=16, scales=3, orientations=8, positions=8, margin=1 / 4),
}


def grid_for(image_size: tuple[int, int] | None) -> ShapeGrid:
    """The grid rendered at `image_size` (H, W); None -> the full 64x64 grid."""
    if image_size is None:
        return GRIDS[DEFAULT_SIZE]
    height, width = image_size
    if height != width or height not in GRIDS:
        allowed = ", ".join(str(s) for s in sorted(GRIDS))
        raise VaelabError(
            f"the shapes dataset is rendered at {allowed} pixels square, not {height}x{width}; "
            f"pass --image-size with one of {allowed}"
        )
    return GRIDS[height]


def grid_rows(grid: ShapeGrid) -> np.ndarray:
    """(N, 5) int64 factor indices of the whole grid in C order (shape slowest, y fastest)."""
    return np.indices(grid.sizes).reshape(len(grid.sizes), -1).T.astype(np.int64)


def render_shapes(grid: ShapeGrid, rows: np.ndarray, *, full_frame: bool = False) -> np.ndarray:
    """(n, S, S) bool images of the factor index rows `rows` (n, 5).

    Only a window around each shape is evaluated; `full_frame` evaluates every pixel instead
    (slower; it exists to check that the window misses nothing).
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != len(FACTOR_NAMES) or rows.dtype.kind not in "iu":
        raise ValueError(f"rows must be (n, 5) integers, got {rows.dtype} {rows.shape}")
    if rows.size and ((rows < 0).any() or (rows >= np.array(grid.sizes)).any()):
        raise ValueError(f"factor indices out of range for the grid sizes {grid.sizes}")
    out = np.zeros((len(rows), grid.size, grid.size), dtype=bool)
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        _render_chunk(grid, chunk, out[start : start + len(chunk)], full_frame)
    return out


def load_shapes(config: DataConfig, *, progress: bool = True) -> SourceData:
    """The shapes grid at `config.image_size` (16, 32 or 64; None -> 64) as a pool of 0/1 float32
    images (N, 1, S, S), labelled by shape, with every image's factor indices."""
    grid = grid_for(config.image_size)
    check_memory(grid, channels=config.channels or 1)
    rows = grid_rows(grid)
    x = torch.zeros((grid.num_images, 1, grid.size, grid.size), dtype=torch.float32)
    pixels = x.numpy()[:, 0]  # (N, S, S), shares memory with x
    starts = range(0, len(rows), CHUNK_ROWS)
    for start in tqdm(starts, desc="rendering shapes", unit="chunk", disable=not progress):
        pixels[start : start + CHUNK_ROWS] = render_shapes(grid, rows[start : start + CHUNK_ROWS])
    log.info("rendered %d shapes at %dx%d", len(rows), grid.size, grid.size)
    factors = torch.from_numpy(rows)
    pool = Split(x=x, y=factors[:, 0].clone(), factors=factors)
    return SourceData(pool=pool, test=None, class_names=SHAPE_NAMES, factors=grid.factors)


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


MEMORY_SHARE = 0.75  # of the machine's memory the images may take: training needs the rest


def check_memory(grid: ShapeGrid, *, channels: int = 1) -> None:
    """Refuse a grid whose float32 images, plus the copies splitting makes, exceed the memory."""
    need = grid.num_images * channels * grid.size**2 * 4 * 2
    have = physical_memory()
    if have is None or need <= MEMORY_SHARE * have:
        return
    small = GRIDS[32]
    raise VaelabError(
        f"the {grid.size}x{grid.size} shapes grid needs about {need / 2**30:.1f} GiB of memory "
        f"({grid.num_images} images and their split copies), more than {MEMORY_SHARE:.0%} of "
        f"this machine's "
        f"{have / 2**30:.1f} GiB; pass --image-size 32 for the CPU grid ({small.num_images} "
        "images)"
    )


def _linspace(low: float, high: float, n: int) -> list[float]:
    """n values from low to high inclusive (just low when n is 1), one exact formula each."""
    return [low + (high - low) * k / (n - 1) if n > 1 else low for k in range(n)]


def _trig_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of k * 2 pi / n rounded to 12 decimals, the same on every machine's libm."""
    angles = np.array([2 * math.pi * k / n for k in range(n)])
    # + 0.0 turns a -0.0 into 0.0.
    return np.round(np.cos(angles), 12) + 0.0, np.round(np.sin(angles), 12) + 0.0


def _render_chunk(grid: ShapeGrid, rows: np.ndarray, out: np.ndarray, full_frame: bool) -> None:
    """Write the images of `rows` (n, 5) into `out` (n, S, S), which starts all False."""
    shape, scale, angle, ix, iy = (rows[:, f] for f in range(len(FACTOR_NAMES)))
    size, radius = grid.size, grid.radius
    low, span = grid.margin * size, size - 2 * grid.margin * size
    positions = np.array(_linspace(0.0, 1.0, grid.positions))
    cx, cy = low + positions[ix] * span, low + positions[iy] * span  # (n,) pixel coordinates
    r = np.array(_linspace(0.5, 1.0, grid.scales))[scale] * radius  # (n,) disc radius
    cos, sin = (table[angle] for table in _trig_tables(grid.orientations))
    if full_frame:
        w = size
        x0 = y0 = np.zeros(len(rows), dtype=np.int64)
    else:
        w = math.ceil(2 * radius) + 2  # every pixel centre within R of the centre, and one more
        x0 = np.clip(np.floor(cx - radius - 0.5).astype(np.int64), 0, size - w)
        y0 = np.clip(np.floor(cy - radius - 0.5).astype(np.int64), 0, size - w)
    offsets = np.arange(w)
    dx = (x0[:, None] + offsets + 0.5) - cx[:, None]  # (n, w) right of the centre
    dy = cy[:, None] - (y0[:, None] + offsets + 0.5)  # (n, w) above the centre
    dx, dy = dx[:, None, :], dy[:, :, None]  # (n, 1, w) columns, (n, w, 1) rows
    cos, sin, inv_r = cos[:, None, None], sin[:, None, None], 1.0 / r[:, None, None]
    # Turn the pixel back by the orientation and divide out the scale: (n, w, w) each.
    u = (cos * dx + sin * dy) * inv_r
    v = (cos * dy - sin * dx) * inv_r
    inside = np.zeros(u.shape, dtype=bool)
    for k, test in enumerate(SHAPE_TESTS):
        chosen = shape == k
        if chosen.any():
            inside[chosen] = test(u[chosen], v[chosen])
    n = np.arange(len(rows))[:, None, None]
    out[n, (y0[:, None] + offsets)[:, :, None], (x0[:, None] + offsets)[:, None, :]] = inside


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)  # corners at radius 0.99


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + (2.0 * v) * (2.0 * v) <= 1.0  # semi-axes 1 (along u) and 0.5


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The heart curve spans x in [-1.14, 1.14], y in [-1, 1.24]; its smallest enclosing circle
    # has centre (0, 0.25) and radius 1.25, mapped onto the unit disc.
    x, y = 1.25 * u, 1.25 * v + 0.25
    q = x * x + y * y - 1.0
    return q * q * q - x * x * (y * y * y) <= 0.0


SHAPE_TESTS = (_square, _ellipse, _heart)  # in SHAPE_NAMES order
