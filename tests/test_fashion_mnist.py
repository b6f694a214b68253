"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package, found without network.

The package installs the four gzipped IDX files in /usr/share/datasets/fashion-mnist (`.ci/run`
installs it); `VAELAB_FASHION_DIR` points these tests at another folder holding them. Tests that
need the full data set skip, saying why, where it is absent; the lookup-order tests use tiny
synthetic files and run everywhere.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import DataConfig, load, load_data
from vaelab.cli import main
from vaelab.data.mnist import IDX_DATASETS, IDX_STEMS
from vaelab.errors import VaelabError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DIR = Path(os.environ.get("VAELAB_FASHION_DIR", str(DEBIAN_DIR)))
HAS_FASHION = all((FASHION_DIR / f"{stem}.gz").is_file() for stem in IDX_STEMS)
needs_fashion = pytest.mark.skipif(
    not HAS_FASHION,
    reason=f"Fashion-MNIST is not in {FASHION_DIR}: `sudo apt install dataset-fashion-mnist`, "
    "or set VAELAB_FASHION_DIR to a folder holding its four .gz files",
)
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No VAELAB_DATA, an empty private cache; returns a function setting the system folders."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))

    def system_dirs(*folders: Path) -> None:
        table = dataclasses.replace(IDX_DATASETS["fashion-mnist"], system_dirs=folders)
        monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", table)

    return system_dirs


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion(folder: Path, label: int) -> None:
    """Four tiny gzipped IDX files: 3 train and 2 test images of 2x2, every label `label`."""
    shapes = ((3, 2, 2), (3,), (2, 2, 2), (2,))
    folder.mkdir(parents=True, exist_ok=True)
    for stem, shape in zip(IDX_STEMS, shapes, strict=True):
        array = np.full(shape, label if len(shape) == 1 else 7 * label, dtype=np.uint8)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))


def test_only_fashion_mnist_has_the_debian_folder():
    assert IDX_DATASETS["fashion-mnist"].system_dirs == (DEBIAN_DIR,)
    assert IDX_DATASETS["fashion-mnist"].system_package == "dataset-fashion-mnist"
    assert IDX_DATASETS["mnist"].system_dirs == ()


@pytest.mark.parametrize("first", ["data_dir", "VAELAB_DATA", "cache"])
def test_users_folders_and_cache_come_before_the_system_folder(
    tmp_path, offline, monkeypatch, first
):
    write_fashion(tmp_path / "system", label=1)
    offline(tmp_path / "system")
    data_dir = None
    if first == "data_dir":
        write_fashion(tmp_path / "mine" / "fashion-mnist", label=2)
        data_dir = str(tmp_path / "mine")
    elif first == "VAELAB_DATA":
        write_fashion(tmp_path / "mine", label=2)  # flat: the files in DIR itself
        monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "mine"))
    else:
        write_fashion(tmp_path / "cache" / "fashion-mnist", label=2)
    config = DataConfig(dataset="fashion-mnist", data_dir=data_dir, download=False)
    assert load_data(config, progress=False).test.y.tolist() == [2, 2]


def test_system_folder_used_without_network_and_logged(tmp_path, offline, caplog):
    write_fashion(tmp_path / "system", label=3)
    offline(tmp_path / "missing", tmp_path / "system")  # the first folder holding all four wins
    with caplog.at_level(logging.INFO, logger="vaelab.data.mnist"):
        splits = load_data(DataConfig(dataset="fashion-mnist", download=False), progress=False)
    assert splits.test.y.tolist() == [3, 3]
    assert f"loaded Fashion-MNIST from {tmp_path / 'system'}" in caplog.text


def test_system_folder_with_a_file_missing_is_skipped(tmp_path, offline):
    write_fashion(tmp_path / "system", label=3)
    (tmp_path / "system" / f"{IDX_STEMS[3]}.gz").unlink()
    offline(tmp_path / "system")
    with pytest.raises(VaelabError, match="Fashion-MNIST files not found") as info:
        load_data(DataConfig(dataset="fashion-mnist", download=False), progress=False)
    message = str(info.value)
    assert str(tmp_path / "system") in message and str(tmp_path / "cache") in message
    assert "sudo apt install dataset-fashion-mnist" in message


def test_mnist_error_does_not_suggest_the_fashion_package(offline):
    with pytest.raises(VaelabError, match="MNIST files not found") as info:
        load_data(DataConfig(dataset="mnist", download=False), progress=False)
    assert "apt install" not in str(info.value)


# --- the full data set, where the package (or VAELAB_FASHION_DIR) provides it -------------------


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fashion-MNIST as `load_data` finds it with no data dir, an empty cache and no download."""
    cache = tmp_path_factory.mktemp("fashion") / "cache"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("VAELAB_DATA", raising=False)
        monkeypatch.setenv("VAELAB_CACHE", str(cache))  # never created: nothing is written
        table = dataclasses.replace(IDX_DATASETS["fashion-mnist"], system_dirs=(FASHION_DIR,))
        monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", table)
        splits = load_data(DataConfig(dataset="fashion-mnist", download=False), progress=False)
        assert not cache.exists()
        return splits


@needs_fashion
def test_debian_files_hold_the_published_contents():
    # Debian recompresses the files, so the .gz bytes differ from the published ones; the
    # uncompressed train images are what vaelab checks, and they match the published md5.
    raw = gzip.decompress((FASHION_DIR / f"{IDX_STEMS[0]}.gz").read_bytes())
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    assert md5 == IDX_DATASETS["fashion-mnist"].train_images_md5


@needs_fashion
def test_full_fashion_mnist_found_offline(fashion):
    assert fashion.shape == (1, 28, 28)
    assert fashion.class_names == CLASS_NAMES
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (54000, 6000, 10000)
    for split in (fashion.train, fashion.val, fashion.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.x.min() >= 0 and split.x.max() <= 1
    pool_labels = torch.cat([fashion.train.y, fashion.val.y])
    assert torch.bincount(pool_labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(fashion.test.y, minlength=10).tolist() == [1000] * 10


@needs_fashion
def test_one_epoch_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    table = dataclasses.replace(IDX_DATASETS["fashion-mnist"], system_dirs=(FASHION_DIR,))
    monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", table)
    run = tmp_path / "run"
    args = ["train", "--dataset", "fashion-mnist", "--epochs", "1", "--batch-size", "512"]
    args += ["--hidden-dims", "32", "--latent-dim", "2", "--threads", "1", "--no-download"]
    assert main([*args, "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["dataset"] == "fashion-mnist" and config["data"]["data_dir"] is None
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 784 ln 2 = 543.4 nats is a decoder predicting 1/2 everywhere; one epoch does far better.
    assert record["val/loss"] < 450
    assert load(run).config.data_shape == (1, 28, 28)
    assert all((run / f"{name}.png").is_file() for name in ("samples", "reconstructions"))
