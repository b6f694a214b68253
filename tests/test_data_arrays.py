"""`.npy` / `.npz` files as datasets."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import DataConfig, load_data
from vaelab.errors import VaelabError


def load(path, **kwargs):
    config = DataConfig(dataset=str(path), val_fraction=0, test_fraction=0, **kwargs)
    return load_data(config, progress=False)


@pytest.fixture
def npy(tmp_path):
    def make(array, name="x.npy"):
        path = tmp_path / name
        np.save(path, array)
        return path

    return make


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 6, 7), (1, 6, 7)),
        ((5, 1, 6, 7), (1, 6, 7)),
        ((5, 3, 6, 7), (3, 6, 7)),
        ((5, 6, 7, 3), (3, 6, 7)),
        ((5, 6, 7, 1), (1, 6, 7)),
        ((5, 12), (1, 1, 12)),
        ((5, 16), (1, 4, 4)),
        ((5, 1), (1, 1, 1)),
    ],
)
def test_accepted_layouts(npy, shape, expected):
    array = np.random.default_rng(0).random(shape, dtype=np.float32)
    splits = load(npy(array))
    assert splits.shape == expected and len(splits.train) == 5
    x = splits.train.x
    assert x.dtype == torch.float32 and x.is_contiguous()
    assert x.sum().item() == pytest.approx(float(array.sum()), rel=1e-5)


def test_flat_square_vectors_become_images(npy, caplog):
    caplog.set_level(logging.INFO, logger="vaelab")
    array = np.arange(3 * 784, dtype=np.float32).reshape(3, 784) / (3 * 784)
    x = load(npy(array)).train.x
    assert x.shape == (3, 1, 28, 28)
    # Row-major: pixel (r, c) of the 28x28 image is element 28 * r + c of the vector.
    assert torch.equal(x.reshape(3, 784), torch.from_numpy(array))
    assert any("read as 28x28" in r.getMessage() for r in caplog.records)
    load(npy(np.zeros((3, 12), np.float32), "odd.npy"))
    assert any("read as 1x12" in r.getMessage() for r in caplog.records)


def test_channels_last_values_moved(npy):
    array = np.zeros((2, 4, 5, 3), np.float32)
    array[..., 2] = 1.0  # the blue channel
    x = load(npy(array)).train.x
    assert torch.all(x[:, 2] == 1) and torch.all(x[:, :2] == 0)


def test_uint8_scaled_and_bool(npy):
    x = load(npy(np.array([[[0, 255], [51, 102]]] * 3, dtype=np.uint8))).train.x
    assert sorted(set(x.flatten().tolist())) == pytest.approx([0, 0.2, 0.4, 1.0])
    x = load(npy(np.ones((3, 2, 2), dtype=bool), "b.npy")).train.x
    assert torch.all(x == 1.0)


def test_npz_keys_and_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 3, 3), np.uint8), labels=np.array([0, 1, 2, 1]))
    splits = load(path)
    assert sorted(splits.train.y.tolist()) == [0, 1, 1, 2]
    assert splits.train.y.dtype == torch.int64 and splits.class_names is None
    only = tmp_path / "only.npz"
    np.savez(only, whatever=np.zeros((4, 3, 3), np.float32))
    assert load(only).train.y is None
    ambiguous = tmp_path / "amb.npz"
    np.savez(ambiguous, a=np.zeros((4, 3, 3)), b=np.zeros(4))
    with pytest.raises(VaelabError, match="name the images 'x'"):
        load(ambiguous)


def test_label_mismatch_and_float_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 3, 3), np.float32), y=np.array([0, 1, 2]))
    with pytest.raises(VaelabError, match="expected 4 integers"):
        load(path)
    np.savez(path, x=np.zeros((4, 3, 3), np.float32), y=np.zeros(4, np.float32))
    with pytest.raises(VaelabError, match="labels"):
        load(path)


def test_nan_counted(npy):
    array = np.zeros((4, 3, 3), np.float32)
    array[0, 0, 0] = np.nan
    array[1, 1, 1] = np.inf
    with pytest.raises(VaelabError, match="2 non-finite"):
        load(npy(array))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 3, 3), np.float32),
        np.zeros(5, np.float32),
        np.zeros((2, 3, 3, 3, 3), np.float32),
        np.zeros((2, 4, 5, 6), np.float32),
        np.array([["a", "b"], ["c", "d"]]),
        np.zeros((3, 2, 2), np.complex64),
        np.full((3, 2, 2), 300, np.int64),
    ],
)
def test_bad_arrays(npy, array):
    with pytest.raises(VaelabError):
        load(npy(array))


def test_object_and_pickle_refused(tmp_path):
    objects = tmp_path / "obj.npy"
    np.save(objects, np.array([np.zeros(3), np.zeros(4)], dtype=object), allow_pickle=True)
    with pytest.raises(VaelabError, match="obj.npy holds object .pickled. arrays"):
        load(objects)
    pickled = tmp_path / "p.npy"
    pickled.write_bytes(pickle.dumps({"x": np.zeros((3, 2, 2))}))
    with pytest.raises(VaelabError, match="p.npy is not a NumPy .npy file .it looks like a Pyth"):
        load(pickled)
    npz = tmp_path / "obj.npz"
    np.savez(npz, x=np.array([np.zeros(3), np.zeros(4)], dtype=object))
    with pytest.raises(VaelabError, match="obj.npz holds object .pickled. arrays"):
        load(npz)
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(VaelabError, match="could not read"):
        load(garbage)


def test_other_files_renamed_are_named_as_such(tmp_path):
    png = tmp_path / "digits.npy"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
    with pytest.raises(VaelabError) as info:
        load(png)
    assert str(info.value) == (
        f"{png} is not a NumPy .npy file (it looks like a PNG image); save the arrays with np.save"
    )
    text = tmp_path / "d.npz"
    text.write_text("1,2,3\n")
    with pytest.raises(VaelabError, match=r"d.npz is not a NumPy .npz file \(it starts with b'1,2"):
        load(text)
    empty = tmp_path / "e.npy"
    empty.write_bytes(b"")
    with pytest.raises(VaelabError, match=r"e.npy is not a NumPy .npy file \(it is empty\)"):
        load(empty)


def test_npz_without_arrays(tmp_path):
    path = tmp_path / "none.npz"
    np.savez(path)
    with pytest.raises(VaelabError, match="none.npz holds no arrays"):
        load(path)


def test_image_size_and_channels_apply(npy):
    array = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    splits = load(npy(array), image_size=(4, 4), channels=3)
    assert splits.shape == (3, 4, 4)
    # Antialiased bilinear 2x downsampling of a constant image keeps the constant.
    const = load(npy(np.full((2, 3, 8, 8), 0.25, np.float32), "c.npy"), image_size=4, channels=1)
    assert const.shape == (1, 4, 4) and torch.allclose(const.train.x, torch.tensor(0.25))
