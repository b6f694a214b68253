"""Image folders as datasets, and single image files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import DataConfig, load_data, load_image_file
from vaelab.errors import VaelabError


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def gray(value: int, size=(6, 5)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def rgb(r: int, g: int, b: int, size=(6, 5)) -> np.ndarray:
    return np.broadcast_to(np.array([r, g, b], dtype=np.uint8), (*size, 3)).copy()


def load(folder: Path, **kwargs):
    config = DataConfig(dataset=str(folder), val_fraction=0, test_fraction=0, **kwargs)
    return load_data(config, progress=False)


def test_flat_grayscale_folder(tmp_path):
    for i in range(4):
        save(tmp_path / f"img{i}.png", gray(i * 60))
    (tmp_path / "notes.txt").write_text("not an image")
    splits = load(tmp_path)
    assert splits.shape == (1, 6, 5)
    assert splits.train.y is None and splits.class_names is None
    assert sorted(splits.train.x[:, 0, 0, 0].tolist()) == pytest.approx(
        [0, 60 / 255, 120 / 255, 180 / 255]
    )


def test_class_subfolders_rgb(tmp_path):
    save(tmp_path / "cats" / "a.PNG", rgb(255, 0, 0))
    save(tmp_path / "cats" / "b.jpg", rgb(250, 0, 0))
    save(tmp_path / "dogs" / "c.bmp", rgb(0, 0, 255))
    splits = load(tmp_path)
    assert splits.shape == (3, 6, 5)
    assert splits.class_names == ("cats", "dogs")
    x, y = splits.train.x, splits.train.y
    assert sorted(y.tolist()) == [0, 0, 1]
    assert torch.all(x[y == 1, 2] == 1.0) and torch.all(x[y == 1, 0] == 0.0)
    assert torch.all(x[y == 0, 0] > 0.9)  # red, within JPEG error


def test_mixed_gray_and_rgba_become_rgb(tmp_path):
    save(tmp_path / "g.png", gray(100))
    rgba = np.concatenate([rgb(10, 20, 30), np.full((6, 5, 1), 128, np.uint8)], axis=2)
    save(tmp_path / "c.png", rgba)
    x = load(tmp_path).train.x
    assert x.shape == (2, 3, 6, 5)
    colours = sorted(tuple(round(v * 255) for v in x[i, :, 0, 0].tolist()) for i in range(2))
    # Half-transparent (10, 20, 30) over white: 255 + (c - 255) * 128 / 255.
    assert colours == [(100, 100, 100), (132, 137, 142)]


def glyph_alpha(size=(6, 5)) -> np.ndarray:
    """Alpha of a glyph: opaque in a vertical bar (column 2), transparent elsewhere."""
    alpha = np.zeros(size, np.uint8)
    alpha[:, 2] = 255
    return alpha


def test_black_glyph_on_transparent_background_is_black_on_white(tmp_path):
    la = np.stack([gray(0), glyph_alpha()], axis=2)  # black everywhere, only the bar opaque
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    x = load(tmp_path).train.x
    assert x.shape == (1, 1, 6, 5)  # gray with alpha stays gray
    assert torch.all(x[0, 0, :, 2] == 0) and torch.all(x[0, 0, :, [0, 1, 3, 4]] == 1)


@pytest.mark.parametrize("kind", ["RGBA", "P", "L-tRNS"])
def test_other_transparency_is_composited_on_white(tmp_path, kind):
    path = tmp_path / "a.png"
    if kind == "RGBA":
        Image.fromarray(np.concatenate([rgb(255, 0, 0), glyph_alpha()[..., None]], 2)).save(path)
    elif kind == "P":  # palette index 1 is transparent black
        image = Image.fromarray((glyph_alpha() == 0).astype(np.uint8), "P")
        image.putpalette([255, 0, 0, 0, 0, 0])
        image.save(path, transparency=1)
    else:  # grayscale with a transparent value (a PNG tRNS chunk)
        Image.fromarray(np.where(glyph_alpha() > 0, 0, 7).astype(np.uint8)).save(
            path, transparency=7
        )
    x = load_image_file(path, (3, 6, 5))
    background = x[:, :, [0, 1, 3, 4]]
    assert torch.all(background == 1), kind
    expected = [0.0, 0.0, 0.0] if kind == "L-tRNS" else [1.0, 0.0, 0.0]
    assert x[:, 0, 2].tolist() == expected


def test_load_image_file_composites_alpha(tmp_path):
    path = tmp_path / "glyph.png"
    Image.fromarray(np.stack([gray(0), glyph_alpha()], axis=2), "LA").save(path)
    x = load_image_file(path, (1, 6, 5))
    assert torch.all(x[0, :, 2] == 0) and x.sum().item() == 6 * 4


def test_channels_forced(tmp_path):
    save(tmp_path / "c.png", rgb(255, 255, 255))
    save(tmp_path / "g.png", gray(0))
    assert load(tmp_path, channels=1).shape == (1, 6, 5)
    save(tmp_path / "c.png", gray(255))
    assert load(tmp_path, channels=3).shape == (3, 6, 5)


def test_sixteen_bit_png(tmp_path):
    save(tmp_path / "a.png", np.full((4, 4), 65535, np.uint16))
    save(tmp_path / "b.png", np.full((4, 4), 32768, np.uint16))
    x = load(tmp_path).train.x
    assert x.shape == (2, 1, 4, 4)
    assert sorted(x[:, 0, 0, 0].tolist()) == pytest.approx([32768 / 65535, 1.0])


def test_mixed_sizes_error_and_resize(tmp_path):
    save(tmp_path / "a.png", gray(10, (28, 28)))
    save(tmp_path / "b.png", gray(200, (32, 32)))
    with pytest.raises(VaelabError, match=r"different sizes .* 32 wide × 32 high.*--image-size"):
        load(tmp_path)
    x = load(tmp_path, image_size=(16, 20)).train.x
    assert x.shape == (2, 1, 16, 20)
    assert sorted(x[:, 0, 8, 10].tolist()) == pytest.approx([10 / 255, 200 / 255], abs=1e-3)


def test_mixed_sizes_error_names_class_folder_and_axes(tmp_path, caplog):
    save(tmp_path / "cats" / "0.png", gray(10, (28, 28)))
    save(tmp_path / "dogs" / "0.png", gray(10, (28, 32)))  # 28 high, 32 wide
    save(tmp_path / "stray.png", gray(10))  # ignored: warned about only after a good load
    with pytest.raises(VaelabError) as info:
        load(tmp_path)
    assert str(info.value) == (
        f"images in {tmp_path} have different sizes (cats/0.png is 28 wide × 28 high, "
        "dogs/0.png is 32 wide × 28 high); resize them all with --image-size H W (image_size in "
        "a config)"
    )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_images_directly_beside_class_folders_warned_after_loading(tmp_path, caplog):
    save(tmp_path / "cats" / "0.png", gray(10))
    save(tmp_path / "stray.png", gray(10))
    assert len(load(tmp_path).train) == 1
    assert any("ignored 1 image " in r.getMessage() for r in caplog.records)


def test_class_folders_collected_recursively(tmp_path):
    save(tmp_path / "cats" / "b" / "c" / "1.png", gray(2))
    save(tmp_path / "cats" / "a" / "0.png", gray(1))
    save(tmp_path / "cats" / "3.png", gray(3))
    save(tmp_path / "cats" / ".hidden" / "x.png", gray(99))
    save(tmp_path / "dogs" / "deep" / "er" / "4.png", gray(4))
    (tmp_path / "empty").mkdir()
    splits = load(tmp_path)
    assert splits.class_names == ("cats", "dogs")
    # Sorted by path within each class: 3.png, a/0.png, b/c/1.png, then dogs.
    assert [round(v * 255) for v in splits.train.x[:, 0, 0, 0].tolist()] == [3, 1, 2, 4]
    assert splits.train.y.tolist() == [0, 0, 0, 1]


def test_only_nested_images_make_a_class(tmp_path):
    save(tmp_path / "only" / "sub" / "x.png", gray(5))
    splits = load(tmp_path)
    assert splits.class_names == ("only",) and splits.train.y.tolist() == [0]


def test_splits_keep_class_order(tmp_path):
    for k in range(3):
        for i in range(10):
            save(tmp_path / f"class{k}" / f"{i}.png", gray(k * 10 + i))
    splits = load_data(DataConfig(dataset=str(tmp_path)), progress=False)
    for name in ("train", "val", "test"):
        y = splits.split(name).y
        assert len(y) > 1 and torch.equal(y, y.sort().values), name


def test_corrupt_image_names_file(tmp_path):
    save(tmp_path / "good.png", gray(1))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(VaelabError, match="bad.png"):
        load(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(VaelabError, match="no images"):
        load(tmp_path)


def test_folder_splits(tmp_path):
    for i in range(10):
        save(tmp_path / "k" / f"{i}.png", gray(i))
    splits = load_data(DataConfig(dataset=str(tmp_path)), progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 1, 2)


def test_load_image_file_conversions(tmp_path):
    path = save(tmp_path / "c.png", rgb(255, 0, 0, size=(10, 12)))
    x = load_image_file(path, (3, 10, 12))
    assert x.shape == (3, 10, 12) and x.dtype == torch.float32
    assert torch.all(x[0] == 1) and torch.all(x[1:] == 0)
    g = load_image_file(str(path), (1, 5, 6))
    assert g.shape == (1, 5, 6)
    assert g.mean().item() == pytest.approx(0.299, abs=0.01)  # luma of pure red
    path = save(tmp_path / "g.jpg", gray(128))
    x = load_image_file(path, (3, 8, 8))
    assert x.shape == (3, 8, 8) and torch.equal(x[0], x[2])
    assert x.min() >= 0 and x.max() <= 1


def test_load_image_file_errors(tmp_path):
    with pytest.raises(VaelabError, match="does not exist"):
        load_image_file(tmp_path / "missing.png", (1, 8, 8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(VaelabError, match="bad.jpg"):
        load_image_file(bad, (1, 8, 8))
    with pytest.raises(VaelabError, match="1 or 3 channels"):
        load_image_file(bad, (4, 8, 8))


def test_load_image_file_refuses_non_images(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((2, 3)))
    with pytest.raises(VaelabError) as info:
        load_image_file(path, (1, 8, 8))
    assert str(info.value) == (
        f"{path} is not an image file PIL can read (PNG, JPEG, BMP, GIF, ...); pass a PNG or JPEG "
        "file"
    )
