"""The rendered dSprites-like `shapes` source, and factor indices through the data layer."""

from __future__ import annotations

import hashlib
import itertools
import json
import math

import numpy as np
import pytest
import torch

from vaelab.data import DATASETS, DataConfig, DataSplits, Factors, Split, load_data
from vaelab.data import shapes as shapes_module
from vaelab.data.loading import registered_name
from vaelab.data.shapes import GRIDS, grid_for, grid_rows, load_shapes, render_shapes
from vaelab.data.splits import SourceData
from vaelab.data.tensors import conform
from vaelab.errors import VaelabError

# SHA-256 of np.packbits of each whole grid, (N, S, S) bool in C order: another machine (or a
# changed renderer) that draws a single pixel differently fails here.
PINNED_SHA256 = {
    16: "18ce62af8b20fd697fd2ad68e7fb6dc63be14a0c468f6e06d3a47c13d5d7f7f7",
    32: "566246981c9f17931ae8a11f75edc0d58bb9c6a0dd3de876d211201684d43521",
}


@pytest.fixture(scope="module")
def rendered() -> dict[int, np.ndarray]:
    """The 16 and 32 grids as (N, S, S) bool, about half a second together."""
    return {s: render_shapes(GRIDS[s], grid_rows(GRIDS[s])) for s in (16, 32)}


@pytest.fixture(scope="module")
def data16() -> DataSplits:
    return load_data(DataConfig(dataset="shapes", image_size=16), progress=False)


def _as_grid(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) -> (shape, scale, orientation, x, y, S, S) float64."""
    return images.reshape(*GRIDS[size].sizes, size, size).astype(np.float64)


@pytest.mark.parametrize(
    ("size", "sizes"),
    [(16, (3, 3, 8, 8, 8)), (32, (3, 6, 16, 16, 16)), (64, (3, 6, 40, 32, 32))],
)
def test_grid_sizes_and_counts(size, sizes):
    grid = GRIDS[size]
    assert grid.size == size and grid.sizes == sizes
    assert grid.num_images == math.prod(sizes) == {16: 4608, 32: 73728, 64: 737280}[size]
    factors = grid.factors
    assert factors.names == ("shape", "scale", "orientation", "x", "y")
    assert factors.sizes == sizes
    assert factors.categorical == (True, False, False, False, False)
    shape, scale, angle, x, y = (np.array(v) for v in factors.values)
    assert list(shape) == [0, 1, 2]
    assert scale[0] == 0.5 and scale[-1] == 1.0 and np.allclose(np.diff(scale), np.diff(scale)[0])
    assert angle[0] == 0 and angle[-1] < 2 * math.pi
    assert np.allclose(np.diff(angle), 2 * math.pi / len(angle))
    for position in (x, y):
        assert np.allclose(position, np.linspace(0, 1, len(position)))
    assert grid_for((size, size)) is grid


def test_default_is_dsprites_grid_and_cpu_grid_fits_twenty_bins():
    assert grid_for(None) is GRIDS[64]
    assert max(GRIDS[32].sizes) <= 20  # the MIG metric bins each factor into 20


def test_rows_enumerate_the_grid_in_c_order():
    grid = GRIDS[16]
    rows = grid_rows(grid)
    expected = np.array(list(itertools.product(*(range(n) for n in grid.sizes))))
    assert rows.dtype == np.int64
    assert np.array_equal(rows, expected)  # shape slowest, y position fastest


@pytest.mark.parametrize("size", [16, 32])
def test_every_image_is_one_shape_inside_the_frame(rendered, size):
    images = rendered[size]
    assert images.dtype == bool and images.shape == (GRIDS[size].num_images, size, size)
    assert images.sum(axis=(1, 2)).min() >= 3  # even the smallest shape covers a few pixels
    border = images[:, 0].any() or images[:, -1].any()
    border = border or images[:, :, 0].any() or images[:, :, -1].any()
    assert not border  # every shape at every scale and orientation stays inside


def test_window_misses_no_pixel():
    grid = GRIDS[16]
    rows = grid_rows(grid)
    assert np.array_equal(render_shapes(grid, rows), render_shapes(grid, rows, full_frame=True))


@pytest.mark.parametrize("size", [16, 32])
def test_position_factors_move_the_centre_of_mass(rendered, size):
    """x moves the shape right, y moves it down (rows grow), in every image of the grid."""
    images = _as_grid(rendered[size], size)
    centres = np.arange(size) + 0.5
    mass = images.sum(axis=(-1, -2))
    col = (images.sum(axis=-2) * centres).sum(axis=-1) / mass
    row = (images.sum(axis=-1) * centres).sum(axis=-1) / mass
    assert (np.diff(col, axis=3) > 0).all()
    assert (np.diff(row, axis=4) > 0).all()
    # y barely moves the column (rasterising a sub-pixel shift moves it a little)
    assert np.abs(np.diff(col, axis=4)).max() <= 0.5


@pytest.mark.parametrize("size", [16, 32])
def test_scale_grows_each_shape(rendered, size):
    images = rendered[size].reshape(*GRIDS[size].sizes, size, size)
    assert (images[:, 1:] >= images[:, :-1]).all()  # a larger scale covers the smaller one
    counts = images.sum(axis=(-1, -2)).mean(axis=(2, 3, 4))  # (shape, scale)
    assert (np.diff(counts, axis=1) > 0).all()


def test_rendering_is_repeatable(rendered):
    again = render_shapes(GRIDS[16], grid_rows(GRIDS[16]))
    assert np.array_equal(again, rendered[16])


@pytest.mark.parametrize("size", [16, 32])
def test_rendering_matches_pinned_bits(rendered, size):
    digest = hashlib.sha256(np.packbits(rendered[size]).tobytes()).hexdigest()
    assert digest == PINNED_SHA256[size]


def test_the_full_grid_matches_pinned_bits_and_stays_inside_the_frame():
    """Every 97th image of dSprites' own 64 grid (7,601 of 737,280, all factors varied):
    pinned bits, no white pixel on the border, and at least a few pixels each."""
    grid = GRIDS[64]
    images = render_shapes(grid, grid_rows(grid)[::97])
    digest = hashlib.sha256(np.packbits(images).tobytes()).hexdigest()
    assert digest == "6a92706f90748a3e8ffe82dab79e222d58d09c13927c08ca2f016df1f45e1d70"
    border = images[:, [0, -1], :].any() or images[:, :, [0, -1]].any()
    assert not border and images.sum(axis=(1, 2)).min() >= 10


def test_shapes_is_registered():
    assert "shapes" in DATASETS
    assert registered_name("Shapes") == "shapes"


def test_factors_survive_load_data(data16):
    grid = GRIDS[16]
    assert data16.name == "shapes" and data16.shape == (1, 16, 16)
    assert data16.class_names == ("square", "ellipse", "heart")
    assert data16.factors == grid.factors
    seen = []
    for name in ("train", "val", "test"):
        split = data16.split(name)
        assert split.factors is not None and split.factors.shape == (len(split), 5)
        assert torch.equal(split.y, split.factors[:, 0])  # the label is the shape
        assert set(split.x.unique().tolist()) <= {0.0, 1.0}
        rows = split.factors.numpy()
        sample = np.linspace(0, len(rows) - 1, 25).astype(int)  # spread over the split
        expected = render_shapes(grid, rows[sample])
        assert np.array_equal(split.x[sample, 0].numpy(), expected.astype(np.float32))
        seen.append(rows)
    assert [len(r) for r in seen] == [3225, 461, 922]  # 70 / 10 / 20 % of 4608
    every = np.concatenate(seen)
    assert np.array_equal(np.unique(every, axis=0), grid_rows(grid))  # each image exactly once


def test_conform_keeps_labels_and_factors(data16):
    split = data16.train
    three = conform(split, image_size=(16, 16), channels=3)
    assert three.x.shape == (len(split), 3, 16, 16)
    assert three.factors is split.factors and three.y is split.y


def test_split_checks_factor_indices():
    x = torch.zeros(4, 1, 2, 2)
    Split(x=x, y=None, factors=torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="factors"):
        Split(x=x, y=None, factors=torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="factors"):
        Split(x=x, y=None, factors=torch.zeros(4, 2))  # float, not indices
    factors = Factors(names=("a", "b"), values=((0.0,), (0.0, 1.0)), categorical=(False, False))
    with pytest.raises(ValueError, match="factor indices"):
        SourceData(pool=Split(x=x, y=None), test=None, class_names=None, factors=factors)


@pytest.mark.parametrize("size", [8, 28, (16, 32), 128])
def test_other_image_sizes_are_refused(size):
    with pytest.raises(VaelabError) as caught:
        load_data(DataConfig(dataset="shapes", image_size=size), progress=False)
    message = str(caught.value)
    assert "\n" not in message and "16, 32, 64" in message


def test_memory_guard_refuses_the_full_grid(monkeypatch):
    def sysconf(name: str) -> int:  # a 4 GiB machine
        return {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**20}[name]

    monkeypatch.setattr(shapes_module.os, "sysconf", sysconf)
    with pytest.raises(VaelabError) as caught:
        load_shapes(DataConfig(dataset="shapes"), progress=False)  # before any rendering
    message = str(caught.value)
    assert "\n" not in message and "22.5 GiB" in message and "--image-size 32" in message
    source = load_shapes(DataConfig(dataset="shapes", image_size=16), progress=False)
    assert len(source.pool) == 4608  # small grids still fit


def test_factors_round_trip_through_json():
    factors = GRIDS[16].factors
    again = Factors.from_json(json.loads(json.dumps(factors.to_json())))
    assert again == factors and isinstance(again.values[0], tuple)
    assert again.sizes == (3, 3, 8, 8, 8)


def test_factors_normalise_lists():
    factors = Factors(names=["a"], values=[[1, 2.5]], categorical=[True])
    assert factors.names == ("a",) and factors.values == ((1.0, 2.5),)
    assert factors.categorical == (True,) and factors.sizes == (2,)


@pytest.mark.parametrize(
    "fields",
    [
        {"names": ("a", "b"), "values": ((0.0,),), "categorical": (False, False)},
        {"names": ("a",), "values": ((0.0,),), "categorical": (False, True)},
        {"names": ("a",), "values": ((),), "categorical": (False,)},
        {"names": ("a",), "values": ((float("nan"),),), "categorical": (False,)},
        {"names": ("a",), "values": (("x",),), "categorical": (False,)},
        {"names": ("a",), "values": ((0.0,),), "categorical": (1,)},
        {"names": ("a", "a"), "values": ((0.0,), (0.0,)), "categorical": (False, False)},
        {"names": ("",), "values": ((0.0,),), "categorical": (False,)},
        {"names": (), "values": (), "categorical": ()},
        {"names": "a", "values": ((0.0,),), "categorical": (False,)},
    ],
)
def test_factors_validate(fields):
    with pytest.raises(VaelabError):
        Factors(**fields)


def test_factors_from_json_names_what_is_missing():
    with pytest.raises(VaelabError, match="categorical"):
        Factors.from_json({"names": ["a"], "values": [[0.0]]})
