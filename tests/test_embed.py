"""`vaelab.embed` and `vaelab embed`: the codes of every image of a dataset, saved for other
tools, on tiny runs trained on digits and on synthetic data."""

from __future__ import annotations

import csv
import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaelab
from test_cli import FAST, assert_one_line_error, run_cli, write_idx
from vaelab.analysis.embedding import Embedding, save_embedding
from vaelab.data import DataConfig
from vaelab.data.loading import load_digits

TINY = (*FAST, "--epochs", "1", "--hidden-dims", "16", "--quiet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A VAE with a 2-D latent space and an autoencoder, on digits, one epoch each."""
    root = tmp_path_factory.mktemp("embed")
    for name, extra in {"vae": (), "ae": ("--model", "ae")}.items():
        code = vaelab.cli.main(["train", "--out", str(root / name), *TINY, *extra])
        assert code == 0
    return {name: root / name for name in ("vae", "ae")}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digits image and label, in the source's order: (1797, 1, 8, 8), (1797,)."""
    pool = load_digits(DataConfig(), progress=False).pool
    return pool.x, pool.y


def test_means_and_stds_are_the_posteriors(runs, digits) -> None:
    model = vaelab.load(runs["vae"])
    x = digits[0][:300]
    codes = vaelab.embed(model, x, batch_size=300)
    with torch.inference_mode():
        posterior = model.encode(x)
    assert isinstance(codes, vaelab.Embedding)
    assert torch.equal(codes.mean, posterior.mean) and torch.equal(codes.std, posterior.std)
    assert codes.mean.shape == (300, 2) and codes.mean.dtype == torch.float32
    assert codes.samples is None and codes.labels is None
    assert not codes.mean.is_inference()  # usable outside inference mode


def test_samples_are_seeded_and_follow_the_posterior(runs, digits) -> None:
    model = vaelab.load(runs["vae"])
    x = digits[0][:10]
    codes = vaelab.embed(model, x, samples=2000, seed=3)
    assert codes.samples.shape == (10, 2000, 2)
    again = vaelab.embed(model, x, samples=2000, seed=3)
    assert torch.equal(codes.samples, again.samples)
    assert not torch.equal(codes.samples, vaelab.embed(model, x, samples=2000, seed=4).samples)
    eps = (codes.samples - codes.mean[:, None]) / codes.std[:, None]  # ~ N(0, 1) if z ~ q(z|x)
    assert eps.mean().abs() < 0.05 and (eps.std() - 1).abs() < 0.05


def test_batch_size_does_not_change_the_result(runs, digits) -> None:
    model = vaelab.load(runs["vae"])
    x = digits[0][:100]
    whole = vaelab.embed(model, x, samples=3, seed=1)
    batched = vaelab.embed(model, x, samples=3, seed=1, batch_size=7)
    for field in ("mean", "std", "samples"):
        torch.testing.assert_close(
            getattr(batched, field), getattr(whole, field), atol=1e-6, rtol=0
        )


def test_an_autoencoder_has_codes_but_no_spread(runs, digits) -> None:
    model = vaelab.load(runs["ae"])
    x, y = digits[0][:20], digits[1][:20]
    codes = vaelab.embed(model, x, y=y)
    with torch.inference_mode():
        assert torch.equal(codes.mean, model.encode(x).mean)
    assert codes.std is None and codes.samples is None and torch.equal(codes.labels, y)
    with pytest.raises(vaelab.VaelabError, match="points, not distributions"):
        vaelab.embed(model, x, samples=1)


def test_every_format_reads_back(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    codes = Embedding(
        mean=torch.randn(5, 3, generator=generator),
        std=torch.rand(5, 3, generator=generator),
        samples=torch.randn(5, 2, 3, generator=generator),
        labels=torch.tensor([1, 0, 2, 2, 1]),
    )
    names = ("cat", "dog", "eel")
    means = np.load(save_embedding(codes, tmp_path / "c.npy", class_names=names))
    assert means.dtype == np.float32 and np.array_equal(means, codes.mean.numpy())
    with np.load(save_embedding(codes, tmp_path / "c.npz", class_names=names)) as arrays:
        assert set(arrays.files) == {"mean", "std", "samples", "labels", "class_names"}
        for key in ("mean", "std", "samples", "labels"):
            assert np.array_equal(arrays[key], getattr(codes, key).numpy())
        assert arrays["class_names"].tolist() == list(names)
    with open(save_embedding(codes, tmp_path / "c.csv", class_names=names)) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == (
        ["index", "label", "class", "mean_0", "mean_1", "mean_2", "std_0", "std_1", "std_2"]
        + [f"sample_{s}_{d}" for s in range(2) for d in range(3)]
    )
    assert [row[:3] for row in rows[1:3]] == [["0", "1", "dog"], ["1", "0", "cat"]]
    table = np.array([row[3:] for row in rows[1:]], dtype=np.float32)  # 9 digits: exact
    assert np.array_equal(table[:, :3], codes.mean.numpy())
    assert np.array_equal(table[:, 3:6], codes.std.numpy())
    assert np.array_equal(table[:, 6:].reshape(5, 2, 3), codes.samples.numpy())
    bare = Embedding(mean=codes.mean, std=None, samples=None, labels=None)
    with open(save_embedding(bare, tmp_path / "bare.csv")) as handle:
        assert next(csv.reader(handle)) == ["index", "mean_0", "mean_1", "mean_2"]


# --- the command --------------------------------------------------------------------------------


def test_embed_a_registered_dataset_with_its_labels(runs, digits, tmp_path, capsys) -> None:
    out = tmp_path / "codes.npz"
    code, stdout, err = run_cli(capsys, "embed", runs["vae"], "--out", out, "--samples", "2")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[-2] == (
        "1797 images of digits, 2 dimensions: means, standard deviations, 2 samples each and labels"
    )
    assert lines[-1] == str(out)
    expected = vaelab.embed(vaelab.load(runs["vae"]), digits[0], samples=2)
    with np.load(out) as arrays:
        torch.testing.assert_close(torch.from_numpy(arrays["mean"]), expected.mean)
        torch.testing.assert_close(torch.from_numpy(arrays["samples"]), expected.samples)
        assert np.array_equal(arrays["labels"], digits[1].numpy())
        assert arrays["class_names"].tolist() == [str(k) for k in range(10)]


def test_split_picks_one_split_of_the_runs_own(runs, tmp_path, capsys) -> None:
    out = tmp_path / "test.csv"
    code, stdout, err = run_cli(capsys, "embed", runs["vae"], "--split", "test", "--out", out)
    assert code == 0, err
    assert "359 images of the test split of digits" in stdout
    chosen = vaelab.open_run(runs["vae"]).choose_split("test")
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["label"]) for row in rows] == chosen.y.tolist()
    means = np.array([[row["mean_0"], row["mean_1"]] for row in rows], dtype=np.float32)
    expected = vaelab.embed(chosen.run.model, chosen.x).mean.numpy()
    np.testing.assert_allclose(means, expected, atol=1e-6, rtol=0)


def test_arrays_with_and_without_labels(runs, digits, tmp_path, capsys) -> None:
    x = (digits[0][:30, 0].numpy() * 255).round().astype(np.uint8)  # (30, 8, 8), 8-bit
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(30) % 3)
    np.save(tmp_path / "mine.npy", x)
    code, stdout, err = run_cli(
        capsys, "embed", runs["vae"], tmp_path / "mine.npz", "--out", tmp_path / "a.npz"
    )
    assert code == 0, err
    with np.load(tmp_path / "a.npz") as arrays:
        assert set(arrays.files) == {"mean", "std", "labels"}
        assert arrays["labels"].tolist() == (np.arange(30) % 3).tolist()
        expected = vaelab.embed(vaelab.load(runs["vae"]), torch.from_numpy(x[:, None] / 255.0))
        np.testing.assert_allclose(arrays["mean"], expected.mean.numpy(), atol=1e-6, rtol=0)
    code, stdout, err = run_cli(
        capsys, "embed", runs["vae"], tmp_path / "mine.npy", "--out", tmp_path / "b.npz"
    )
    assert code == 0, err
    with np.load(tmp_path / "b.npz") as arrays:
        assert set(arrays.files) == {"mean", "std"}
    code, stdout, err = run_cli(
        capsys, "embed", runs["vae"], tmp_path / "mine.npz", "--out", tmp_path / "c.npy"
    )
    assert code == 0, err
    assert "c.npy holds the means alone; .npz or .csv would also keep the standard " in stdout
    assert np.load(tmp_path / "c.npy").shape == (30, 2)


def test_an_image_folder_is_resized_as_the_run_was_trained(tmp_path, capsys) -> None:
    """A run trained with --image-size 8 --channels 1 converts what it embeds the same way."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(tmp_path / "pics" / label / f"{i}.png")
    run = tmp_path / "run"
    train = ("train", "--out", run, "--image-size", "8", "--channels", "1", *TINY)
    assert vaelab.cli.main([str(a) for a in train]) == 0
    out = tmp_path / "pics.csv"
    code, stdout, err = run_cli(capsys, "embed", run, tmp_path / "pics", "--out", out)
    assert code == 0, err
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["label"], row["class"]) for row in rows] == [("0", "a")] * 3 + [("1", "b")] * 3
    wrong = np.random.default_rng(1).random((5, 3, 10, 10), dtype=np.float32)
    np.save(tmp_path / "wrong.npy", wrong)  # converted like the training data: (1, 8, 8)
    code, stdout, err = run_cli(capsys, "embed", run, tmp_path / "wrong.npy", "--out", out)
    assert code == 0, err
    assert "5 images of" in stdout


def test_mnist_gives_the_training_images_then_the_test_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """On a tiny stand-in for MNIST: 60 "training" then 20 "test" images, in file order."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, 10, 60), "t10k": rng.integers(0, 10, 20)}
    for prefix, y in labels.items():
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(y), 28, 28))
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y)
    run = tmp_path / "run"
    train = ("train", "--out", run, "--dataset", "mnist", "--data-dir", tmp_path, "--no-download")
    assert vaelab.cli.main([str(a) for a in (*train, *TINY)]) == 0
    out = tmp_path / "mnist.npz"
    code, stdout, err = run_cli(capsys, "embed", run, "mnist", "--out", out)
    assert code == 0, err
    assert "80 images of mnist" in stdout
    with np.load(out) as arrays:
        assert arrays["labels"].tolist() == [*labels["train"].tolist(), *labels["t10k"].tolist()]


# --- bad input: one line, exit 1, nothing left behind ------------------------------------------


def assert_fails_cleanly(capsys, folder: Path, fragment: str, *args: object) -> None:
    before = sorted(folder.iterdir())
    code, _, err = run_cli(capsys, "embed", *args)
    assert code == 1
    assert_one_line_error(code, err, fragment)
    assert sorted(folder.iterdir()) == before  # no output, no temporary file


def test_images_of_another_shape_are_refused(runs, tmp_path, capsys) -> None:
    np.save(tmp_path / "big.npy", np.zeros((5, 3, 10, 10), dtype=np.float32))
    (tmp_path / "codes.npy").write_bytes(b"an older file")
    assert_fails_cleanly(
        capsys,
        tmp_path,
        "big.npy: images of shape (3, 10, 10) but the model takes (1, 8, 8)",
        runs["vae"],
        tmp_path / "big.npy",
        "--out",
        tmp_path / "codes.npy",
    )
    assert (tmp_path / "codes.npy").read_bytes() == b"an older file"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("codes.txt", "'.txt' is not a format vaelab writes; name a .npy"),
        ("codes", "it has no suffix"),
        ("missing/codes.npy", "folder"),
    ],
)
def test_outputs_vaelab_cannot_write(runs, tmp_path, capsys, name: str, fragment: str) -> None:
    assert_fails_cleanly(capsys, tmp_path, fragment, runs["vae"], "--out", tmp_path / name)


def test_samples_of_an_autoencoder_are_refused(runs, tmp_path, capsys) -> None:
    out = tmp_path / "codes.npz"
    args = (runs["ae"], "--out", out, "--samples", "3")
    assert_fails_cleanly(capsys, tmp_path, "are points, not distributions", *args)


def test_an_unwritable_folder_names_the_output(
    runs, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "codes.npz"

    def denied(*args: object, dir: str, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.codes.npz.x1y2z3.npz")

    with monkeypatch.context() as patch:  # what mkstemp does in a read-only folder
        patch.setattr(tempfile, "mkstemp", denied)
        assert_fails_cleanly(
            capsys, tmp_path, f"cannot write {out}: Permission denied", runs["vae"], "--out", out
        )

    def full(file: object, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"PK half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)  # the disk fills up while writing
    assert_fails_cleanly(
        capsys, tmp_path, f"cannot write {out}: No space left on device", runs["vae"], "--out", out
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder(runs, tmp_path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_fails_cleanly(
            capsys, folder, "Permission denied", runs["vae"], "--out", folder / "c.npy"
        )
    finally:
        folder.chmod(0o755)
