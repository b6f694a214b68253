"""The figure commands and `vaelab info`: what the PNGs show, how they are laid out, and how
moved data, empty splits, unreadable weights and unwritable outputs are reported."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_cli import (
    FAST,
    assert_one_line_error,
    grid_size,
    png_size,
    run_cli,
    snapshot,
    write_idx,
)
from vaelab.cli import build_parser, main
from vaelab.data import DataConfig, load_data
from vaelab.figures import MIN_CELL_PIXELS, paired_slots, save_image_grid, to_display


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch digits VAE with its standard figures."""
    run = tmp_path_factory.mktemp("figures") / "run"
    assert main(["train", "--epochs", "2", "--no-progress", "-q", "--out", str(run)]) == 0
    return run


def digits_split_size(name: str) -> int:
    return len(load_data(DataConfig(dataset="digits"), progress=False).split(name))


def cells(path: Path, row: int, height: int = 8, width: int = 8) -> list[np.ndarray]:
    """The pixels of each image in grid row `row` of a figures.py PNG, left to right."""
    with Image.open(path) as image:
        array = np.asarray(image)
    scale = max(1, MIN_CELL_PIXELS // max(height, width))
    top = (2 + row * (height + 2)) * scale
    columns = (array.shape[1] // scale - 2) // (width + 2)
    lefts = [(2 + c * (width + 2)) * scale for c in range(columns)]
    return [array[top : top + height * scale, x : x + width * scale] for x in lefts]


# --- figures.py -----------------------------------------------------------------------------


def test_value_range_maps_the_data_range_to_black_and_white() -> None:
    """A Gaussian decoder's samples overshoot [0, 1]; min-max scaling then turned the black
    background grey. With the data range, 0 stays black and overshoots are clamped."""
    images = torch.zeros(4, 1, 8, 8)  # black backgrounds...
    images[:, :, 2:6, 2:6] = 1.3  # ...and bright strokes overshooting 1
    images[:, :, 0, 0] = -0.4
    shown = to_display(images, value_range=(0.0, 1.0))
    assert shown[:, :, 1, 1].eq(0).all() and shown[:, :, 3, 3].eq(1).all()
    assert to_display(torch.tensor([[[[2.0, 4.0, 6.0]]]]), value_range=(2.0, 6.0)).tolist() == [
        [[[0.0, 0.5, 1.0]]]
    ]
    assert to_display(images)[:, :, 1, 1].gt(0.2).all()  # without it: min-max, grey


def test_paired_slots_keep_each_pair_in_one_column() -> None:
    slots = paired_slots(25, columns=10)
    top, bottom = slots[:25], slots[25:]
    assert top[:10].tolist() == list(range(10)) and bottom[:10].tolist() == list(range(10, 20))
    assert top[20].item() == 40 and bottom[24].item() == 54  # third row pair: rows 4 and 5
    assert torch.equal(bottom - top, torch.full((25,), 10))


def test_a_grid_too_large_to_open_is_refused_before_drawing(tmp_path: Path) -> None:
    huge = torch.zeros(1, 1, 1, 1).expand(1024, 1, 300, 300)  # a view: no memory used
    with pytest.raises(Exception, match="too large for image viewers"):
        save_image_grid(huge, tmp_path / "huge.png", columns=32)
    assert not any(tmp_path.iterdir())


# --- what reconstructions show and how they are laid out ------------------------------------


def _two_class_folder(root: Path) -> Path:
    """Class sub-folders `a` (black images) and `b` (white), 20 each: the order is class-sorted."""
    for label, value in (("a", 0), ("b", 255)):
        (root / "shapes" / label).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8), value, np.uint8)).save(
                root / "shapes" / label / f"{i}.png"
            )
    return root / "shapes"


def test_reconstructions_spread_over_a_class_sorted_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        _two_class_folder(tmp_path),
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        run,
    )
    assert code == 0, err
    for figure, n in ((run / "reconstructions.png", 8), (tmp_path / "two.png", 2)):
        if figure.name == "two.png":
            code, _, err = run_cli(capsys, "reconstruct", run, "--n", n, "--out", figure)
            assert code == 0, err
        originals = cells(figure, row=0)
        assert len(originals) == n
        assert originals[0].max() == 0 and originals[-1].min() == 255  # both classes shown


def test_reconstructions_wrap_into_row_pairs_of_ten(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "r.png"
    code, _, err = run_cli(capsys, "reconstruct", trained, "--n", "25", "--out", out_png)
    assert code == 0, err
    assert png_size(out_png) == grid_size(6, 10)  # 3 row pairs: 10 + 10 + 5
    assert len([c for c in cells(out_png, row=5) if c.min() < 255]) == 5  # the rest is blank
    assert png_size(trained / "reconstructions.png") == grid_size(2, 10)


def test_asking_for_more_images_than_the_split_holds_names_its_size(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = digits_split_size("val")
    code, _, err = run_cli(
        capsys,
        "reconstruct",
        trained,
        "--split",
        "val",
        "--n",
        val + 1,
        "--out",
        tmp_path / "r.png",
    )
    fragment = f"--n {val + 1} is more than the val split holds ({val} images); pass --n {val} or"
    assert_one_line_error(code, err, fragment)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_n_is_capped(command: str, trained: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, command, trained, "--n", "100000", "--out", tmp_path / "x.png")
    assert_one_line_error(code, err, "--n must be at most 1024, got 100000")
    assert not any(tmp_path.iterdir())


def test_figures_show_the_data_range_of_the_checkpoint(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """meta.json's data_range [min, max] maps to black..white: with [0, 2], digits' 1.0 pixels
    are mid-grey; without the key (older checkpoints), as before."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    meta_path = run / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["data_range"] == [0.0, 1.0]  # written by training
    for data_range, brightest in (([0.0, 2.0], 128), (None, 255)):
        if data_range is None:
            del meta["data_range"]
        else:
            meta["data_range"] = data_range
        meta_path.write_text(json.dumps(meta))
        out_png = tmp_path / "r.png"
        assert run_cli(capsys, "reconstruct", run, "--n", "10", "--out", out_png)[0] == 0
        assert max(cell.max() for cell in cells(out_png, row=0)) == brightest


# --- reading the run's data -----------------------------------------------------------------


def test_moved_dataset_is_named_and_dataset_overrides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "arrays.npz", x=rng.uniform(0, 1, (30, 8, 8)), y=rng.integers(0, 3, 30))
    run = tmp_path / "run"
    assert (
        run_cli(
            capsys,
            "train",
            "--dataset",
            tmp_path / "arrays.npz",
            "--epochs",
            "1",
            *FAST,
            "--out",
            run,
        )[0]
        == 0
    )
    (tmp_path / "arrays.npz").rename(tmp_path / "moved.npz")
    for command in ("reconstruct", "interpolate"):
        before = snapshot(tmp_path)
        code, _, err = run_cli(capsys, command, run)
        assert_one_line_error(code, err, "does not exist any more; if it moved, pass --dataset")
        assert snapshot(tmp_path) == before
        code, _, err = run_cli(capsys, command, run, "--dataset", tmp_path / "moved.npz")
        assert code == 0, err


def test_help_says_what_dataset_and_data_dir_do(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("reconstruct", "interpolate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "image folder, .npy or .npz file, if it moved since training" in text
        assert "folder holding the MNIST / Fashion-MNIST IDX files" in text


def test_mnist_run_without_its_files_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The IDX files are gone and the download fails: one error line, then --data-dir works."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    idx = tmp_path / "idx"
    idx.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    run = tmp_path / "run"
    assert (
        run_cli(
            capsys,
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            idx,
            "--epochs",
            "1",
            "--no-download",
            *FAST,
            "--out",
            run,
        )[0]
        == 0
    )
    idx.rename(tmp_path / "moved")

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    config = json.loads((run / "config.json").read_text())
    config["data"]["download"] = True  # as a run trained with downloads allowed
    for checkpoint in ("config.json", "best/config.json", "last/config.json"):
        (run / checkpoint).write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "reconstruct", run, "--out", tmp_path / "r.png")
    assert_one_line_error(code, err, "could not download MNIST")
    assert not (tmp_path / "r.png").exists()
    code, _, err = run_cli(
        capsys, "reconstruct", run, "--data-dir", tmp_path / "moved", "--out", tmp_path / "r.png"
    )
    assert code == 0, err


def _one_image_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    np.save(tmp_path / "one.npy", np.random.default_rng(0).uniform(0, 1, (1, 8, 8)))
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        tmp_path / "one.npy",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        run,
    )
    assert code == 0, err
    return run


def test_empty_test_split_falls_back_like_training_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _one_image_run(tmp_path, capsys)
    assert png_size(run / "reconstructions.png") == grid_size(2, 1)
    code, out, err = run_cli(capsys, "reconstruct", run, "--out", tmp_path / "r.png")
    assert code == 0, err
    assert "the test and val splits are empty; using the train split (1 image)" in out
    assert png_size(tmp_path / "r.png") == grid_size(2, 1)
    code, out, err = run_cli(capsys, "interpolate", run, "--out", tmp_path / "i.png")
    assert code == 0 and "using the train split" in out, err
    code, _, err = run_cli(capsys, "reconstruct", run, "--split", "test")
    assert_one_line_error(code, err, "is empty (val has 0 images, train has 1 image); choose")
    code, _, err = run_cli(capsys, "interpolate", run, "--from", "1")
    assert_one_line_error(code, err, "the train split has 1 image (0 to 0)")


# --- writing the PNG ------------------------------------------------------------------------


def test_unwritable_output_names_the_target_not_the_temporary_file(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out_png = tmp_path / "s.png"

    def denied(*args: object, dir: str, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.s.png.9wmiq0py.png")

    with monkeypatch.context() as patch:  # what mkstemp does in a read-only folder
        patch.setattr(tempfile, "mkstemp", denied)
        code, _, err = run_cli(capsys, "sample", trained, "--out", out_png)
    assert_one_line_error(code, err, f"cannot write {out_png}: Permission denied")
    assert "9wmiq0py" not in err

    def full(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    code, _, err = run_cli(capsys, "sample", trained, "--out", out_png)
    assert_one_line_error(code, err, f"cannot write {out_png}: No space left on device")
    assert not any(tmp_path.iterdir())  # no temporary file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_out_folder(trained: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, "sample", trained, "--out", folder / "s.png")
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, err, f"cannot write {folder / 's.png'}: Permission denied")


def test_force_without_figures_removes_the_old_runs_figures(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert (run / "samples.png").is_file()
    code, _, err = run_cli(capsys, "train", "--force", "--epochs", "1", *FAST, "--out", run)
    assert code == 0, err
    figures = ("samples.png", "reconstructions.png", "interpolation.png")
    assert not any((run / name).exists() for name in figures)


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sample", "reconstruct", "interpolate"])
def test_figure_commands_default_to_device_auto(command: str) -> None:
    assert build_parser().parse_args([command, "run"]).device == "auto"


def test_interpolate_from_a_non_image_file_says_so(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(tmp_path / "arr.npz", x=np.zeros((2, 8, 8)))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "interpolate", trained, "--from", tmp_path / "arr.npz")
    assert_one_line_error(code, err, "arr.npz is not an image file or a dataset index")
    assert "remove or replace" not in err
    assert snapshot(tmp_path) == before


# --- info -----------------------------------------------------------------------------------


def test_info_with_unreadable_weights_reports_then_fails(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "best" / "model.safetensors").write_bytes(b"\x00garbage" * 99)
    healthy = json.loads(run_cli(capsys, "info", trained, "--json")[1])
    code, out, err = run_cli(capsys, "info", run)
    assert "latent_dim = 2" in out and "val/loss = " in out
    assert f"parameters  {healthy['parameters']:,} (counted from config.json)" in out
    assert "weights     UNREADABLE; --checkpoint last might work" in out
    assert_one_line_error(code, err, "weights of checkpoint")
    assert "unreadable" in err and "--checkpoint last might work" in err
    code, out, err = run_cli(capsys, "info", run, "--json")
    report = json.loads(out)
    assert code == 1 and "corrupt" in report["weights_error"]
    assert report["parameters"] == healthy["parameters"]
    code, out, err = run_cli(capsys, "info", run / "best")
    assert_one_line_error(code, err, f"{run / 'last'} might work")
    code, out, err = run_cli(capsys, "info", run, "--checkpoint", "last")
    assert (code, err) == (0, "") and "UNREADABLE" not in out


def test_info_help_documents_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the report is still printed" in text and "exits with code 1" in text
