"""DataConfig validation, the digits source, the registry and the seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab.data import DATASETS, DataConfig, DataSplits, Split, load_data, looks_like_0_255
from vaelab.data.images import load_image_folder
from vaelab.data.loading import registered_name, resolve_source
from vaelab.data.splits import SourceData, split_source
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(DataConfig(dataset="digits", seed=0), progress=False)


@pytest.fixture
def ids_file(tmp_path):
    """An .npz whose label is the sample index and whose pixels encode it too."""

    def make(n: int):
        ids = np.arange(n)
        x = np.broadcast_to((ids / max(n, 1))[:, None, None], (n, 2, 2)).astype(np.float32)
        path = tmp_path / f"ids{n}.npz"
        np.savez(path, x=x, y=ids)
        return str(path)

    return make


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"test_fraction": float("nan")},
        {"val_fraction": 0.5, "test_fraction": 0.5},
        {"image_size": (0, 8)},
        {"image_size": (8,)},
        {"image_size": (8.0, 8)},
        {"channels": 2},
        {"channels": True},
        {"seed": 1.5},
        {"dataset": ""},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(VaelabError):
        DataConfig(**kwargs)


def test_config_normalises_image_size():
    assert DataConfig(image_size=[16, 12]).image_size == (16, 12)
    assert DataConfig(image_size=10).image_size == (10, 10)
    assert DataConfig(val_fraction=0).val_fraction == 0


def test_registry_names():
    assert {"digits", "mnist", "fashion-mnist"} <= set(DATASETS)


def test_digits_shapes_range_labels(digits):
    assert digits.name == "digits"
    assert digits.shape == (1, 8, 8)
    assert digits.class_names == tuple(str(d) for d in range(10))
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert (len(digits.test), len(digits.val)) == (round(0.2 * 1797), round(0.1 * 1797))
    for name in ("train", "val", "test"):
        split = digits.split(name)
        assert split.x.dtype == torch.float32 and split.x.is_contiguous()
        assert split.y.dtype == torch.int64 and split.y.shape == (len(split),)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert digits.train.x.max() == 1.0  # 16 / 16
    assert set(digits.train.y.tolist()) == set(range(10))


def test_digits_splits_partition_pool(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    joined_x = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    joined_y = torch.cat([digits.train.y, digits.val.y, digits.test.y])
    assert torch.equal(torch.bincount(joined_y), torch.bincount(torch.from_numpy(bunch.target)))
    assert joined_x.sum().item() == pytest.approx(bunch.images.sum() / 16, rel=1e-6)


def test_split_by_name_rejects_unknown(digits):
    assert digits.split("val") is digits.val
    with pytest.raises(VaelabError, match="unknown split"):
        digits.split("validation")


def test_same_seed_same_splits_other_seed_differs(digits):
    again = load_data(DataConfig(dataset="digits", seed=0), progress=False)
    other = load_data(DataConfig(dataset="digits", seed=1), progress=False)
    for name in ("train", "val", "test"):
        assert torch.equal(digits.split(name).x, again.split(name).x)
        assert torch.equal(digits.split(name).y, again.split(name).y)
    assert not torch.equal(digits.test.x, other.test.x)


def test_splits_are_disjoint_and_labels_follow_images(ids_file):
    splits = load_data(DataConfig(dataset=ids_file(100), seed=3), progress=False)
    ids = [splits.split(name).y.tolist() for name in ("train", "val", "test")]
    assert [len(i) for i in ids] == [70, 10, 20]
    assert sorted(sum(ids, [])) == list(range(100))
    for name in ("train", "val", "test"):
        split = splits.split(name)
        assert torch.allclose(split.x[:, 0, 0, 0], split.y.float() / 100)


def test_zero_val_fraction_gives_empty_val(ids_file):
    splits = load_data(DataConfig(dataset=ids_file(10), val_fraction=0), progress=False)
    assert len(splits.val) == 0 and splits.val.x.shape == (0, 1, 2, 2)
    assert (len(splits.train), len(splits.test)) == (8, 2)


def test_small_pool_gets_at_least_one_per_split(ids_file):
    splits = load_data(
        DataConfig(dataset=ids_file(3), val_fraction=0.01, test_fraction=0.01), progress=False
    )
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("n", "fractions", "sizes"),
    [
        (1, {}, (1, 0, 0)),
        (2, {}, (2, 0, 0)),  # one each for val and test would leave train empty
        (3, {}, (1, 1, 1)),
        (4, {"val_fraction": 0.45, "test_fraction": 0.5}, (4, 0, 0)),
        (5, {"val_fraction": 0.45, "test_fraction": 0.5}, (1, 2, 2)),
    ],
)
def test_tiny_pools_train_on_everything_rather_than_fail(ids_file, n, fractions, sizes):
    splits = load_data(DataConfig(dataset=ids_file(n), **fractions), progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    assert splits.val.x.shape[1:] == splits.train.x.shape[1:]


def test_empty_pool_is_the_only_split_error():
    empty = SourceData(pool=Split(x=torch.zeros(0, 1, 2, 2), y=None), test=None, class_names=None)
    with pytest.raises(VaelabError, match="no samples"):
        split_source(empty, val_fraction=0.1, test_fraction=0.2, seed=0)


def test_image_size_and_channels_apply_to_named_dataset():
    splits = load_data(DataConfig(image_size=(16, 12), channels=3), progress=False)
    assert splits.shape == (3, 16, 12)
    x = splits.train.x
    assert torch.equal(x[:, 0], x[:, 2]) and x.min() >= 0 and x.max() <= 1


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(VaelabError, match="unknown dataset 'foo': use one of digits, mnist"):
        load_data(DataConfig(dataset="foo"))
    other = tmp_path / "data.csv"
    other.write_text("1,2\n")
    with pytest.raises(VaelabError, match="unsupported file type '.csv'"):
        load_data(DataConfig(dataset=str(other)))


@pytest.mark.parametrize("spelling", ["DIGITS", "Digits", " digits"])
def test_registered_names_ignore_case(spelling):
    splits = load_data(DataConfig(dataset=spelling), progress=False)
    assert splits.name == "digits" and len(splits.train) > 1000


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("MNIST", "mnist"), ("Fashion-MNIST", "fashion-mnist"), ("fashion_mnist", "fashion-mnist")],
)
def test_idx_names_ignore_case(spelling, name):
    assert resolve_source(spelling) == (name, DATASETS[name])


def test_existing_path_beats_case_insensitive_name(tmp_path, monkeypatch):
    (tmp_path / "MNIST").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_source("MNIST") == ("MNIST", load_image_folder)
    assert registered_name("MNIST") is None and registered_name("Fashion_MNIST") == "fashion-mnist"
    (tmp_path / "mnist").mkdir()
    assert resolve_source("mnist")[0] == "mnist"  # the exact registered name still wins


@pytest.mark.parametrize("dataset", ["nodir/", "a/b", "./mnist", "~/no-such-vaelab-data", "d.npy"])
def test_missing_path_is_not_an_unknown_name(dataset):
    with pytest.raises(VaelabError) as info:
        load_data(DataConfig(dataset=dataset))
    assert str(info.value).startswith(f"dataset path {dataset} does not exist; pass an existing")


def test_looks_like_0_255():
    assert looks_like_0_255(torch.tensor([0.0, 3.0, 255.0]))
    assert not looks_like_0_255(torch.tensor([0.0, 0.5, 1.0]))
    assert not looks_like_0_255(torch.tensor([-1.0, 3.0]))  # standardised, not raw pixels
    assert not looks_like_0_255(torch.tensor([0, 255], dtype=torch.uint8))  # not float data
    assert not looks_like_0_255(torch.zeros(0))
    assert not looks_like_0_255(torch.tensor([float("nan"), 10.0]))
    assert looks_like_0_255(torch.full((2, 1, 4, 4), 128.0, dtype=torch.float16))


def test_split_checks_shapes():
    with pytest.raises(ValueError):
        Split(x=torch.zeros(3, 8, 8), y=None)
    with pytest.raises(ValueError):
        Split(x=torch.zeros(3, 1, 8, 8), y=torch.zeros(2, dtype=torch.int64))


def test_val_split_last_holds_out_the_end_of_the_pool(ids_file):
    """--val-split last: validation is the last images of what test leaves (MNIST's usual
    last 10,000 of 60,000), train the rest, both in order; test is as with a random split."""
    config = DataConfig(dataset=ids_file(100), seed=3, val_split="last")
    splits = load_data(config, progress=False)
    randomly = load_data(DataConfig(dataset=ids_file(100), seed=3), progress=False)
    assert torch.equal(splits.test.y, randomly.test.y)
    rest = sorted(splits.train.y.tolist() + splits.val.y.tolist())
    assert splits.val.y.tolist() == rest[-10:]
    assert splits.train.y.tolist() == rest[:-10]
    assert not torch.equal(splits.val.y, randomly.val.y)


def test_unknown_val_split_is_a_one_line_error():
    with pytest.raises(VaelabError, match="unknown validation split 'first'"):
        DataConfig(val_split="first")


def test_val_split_last_with_an_official_test_split():
    """With a source's own test split (MNIST's), val is the pool's last images exactly."""
    pool = Split(x=torch.arange(60.0).view(60, 1, 1, 1), y=torch.arange(60))
    test = Split(x=torch.zeros(5, 1, 1, 1), y=torch.zeros(5, dtype=torch.long))
    source = SourceData(pool=pool, test=test, class_names=None)
    train, val, held = split_source(
        source, val_fraction=1 / 6, test_fraction=0.2, seed=0, val_split="last"
    )
    assert val.y.tolist() == list(range(50, 60)) and train.y.tolist() == list(range(50))
    assert held is test
