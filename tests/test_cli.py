"""The `vaelab` command, in-process: `vaelab.cli.main([...])` on digits and tiny synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaelab.cli import main
from vaelab.figures import MIN_CELL_PIXELS
from vaelab.models import VAE, LossTerms
from vaelab.training.checkpoint import load_checkpoint

FAST = ("--no-progress", "--no-figures")


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `vaelab args...`; argparse's SystemExit becomes a code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaelab: error: "), err
    assert fragment.lower() in lines[0].lower(), err


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with the sha256 of its bytes ("dir" for folders)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def weights(run: Path, checkpoint: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run / checkpoint / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def grid_size(rows: int, columns: int, height: int = 8, width: int = 8) -> tuple[int, int]:
    """(width, height) in pixels of a figures.py grid of (height x width) images."""
    scale = max(1, MIN_CELL_PIXELS // max(height, width))
    return ((columns * (width + 2) + 2) * scale, (rows * (height + 2) + 2) * scale)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`vaelab train --epochs 2` run from an empty folder: the default run folder, figures on."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        assert main(["train", "--epochs", "2", "--no-progress", "-q"]) == 0
    return home / "runs" / "digits-vae"


# --- train ----------------------------------------------------------------------------------


def test_train_defaults_to_a_vae_on_digits_and_prints_the_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "--epochs", "1", "--no-progress")
    assert code == 0 and err == ""
    run = Path("runs/digits-vae")
    names = ["samples.png", "reconstructions.png", "interpolation.png"]
    assert out.splitlines()[-4:] == [str(run)] + [str(run / n) for n in names]
    assert "epoch 1/1" in out and "done: 1 epoch" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == "vae" and config["data"]["dataset"] == "digits"
    assert config["model"]["latent_dim"] == 2 and config["model"]["data_shape"] == [1, 8, 8]
    assert (run / "best" / "model.safetensors").is_file()
    assert (run / "last" / "training_state.safetensors").is_file()


def test_quiet_prints_only_the_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "train", "-q", "--epochs", "1", *FAST, "--out", tmp_path / "r")
    assert (code, out, err) == (0, f"{tmp_path / 'r'}\n", "")


def test_standard_figures_open_and_have_the_expected_sizes(trained: Path) -> None:
    assert png_size(trained / "samples.png") == grid_size(8, 8)  # 64 samples, 8 x 8
    assert png_size(trained / "reconstructions.png") == grid_size(2, 10)
    assert png_size(trained / "interpolation.png") == grid_size(1, 12)  # 2 ends + 10 steps


def test_resume_continues_exactly_where_the_run_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(capsys, "train", "--epochs", "4", *FAST, "--out", straight)[0] == 0
    assert run_cli(capsys, "train", "--epochs", "2", *FAST, "--out", resumed)[0] == 0
    code, out, _ = run_cli(capsys, "train", "--resume", resumed, "--epochs", "4", *FAST)
    assert code == 0 and "resuming" in out and "epoch 3/4" in out
    assert_same_weights(straight, resumed)
    losses = [
        [r["train/loss"] for r in map(json.loads, (run / "metrics.jsonl").open())]
        for run in (straight, resumed)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_resume_of_a_finished_run_asks_for_more_epochs(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(trained)
    code, _, err = run_cli(capsys, "train", "--resume", trained, *FAST)
    assert_one_line_error(code, err, "already trained 2 epochs; pass --epochs N with N > 2")
    assert snapshot(trained) == before


def test_one_epoch_is_counted_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", "--epochs", "1", *FAST, "--out", run)
    assert code == 0 and "done: 1 epoch," in out
    code, _, err = run_cli(capsys, "train", "--resume", run, *FAST)
    assert_one_line_error(code, err, "already trained 1 epoch; pass --epochs N with N > 1")


def test_saved_config_repeats_a_run_and_the_seed_decides_the_weights(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    assert (
        run_cli(capsys, "train", "--config", trained / "config.json", *FAST, "--out", again)[0] == 0
    )
    assert_same_weights(trained, again)
    code = run_cli(capsys, "train", "--config", trained, "--seed", "1", *FAST, "--out", other)[0]
    assert code == 0
    assert not torch.equal(
        weights(trained)["decoder.net.0.weight"], weights(other)["decoder.net.0.weight"]
    )


def test_toml_config_with_command_line_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "vae.toml"
    config.write_text(
        "[model]\nlatent_dim = 3\nhidden_dims = [32, 16]\n[data]\nval_fraction = 0.2\n"
        '[optim]\noptimizer = "adamw"\nlr = 0.002\n'
        "[train]\nepochs = 1\nbatch_size = 64\nbinarize = true\n"
    )
    run = tmp_path / "run"
    code = run_cli(
        capsys,
        "train",
        "--config",
        config,
        "--latent-dim",
        "4",
        "--no-binarize",
        *FAST,
        "--out",
        run,
    )[0]
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["latent_dim"] == 4  # the flag wins over the file
    assert saved["model"]["hidden_dims"] == [32, 16] and saved["data"]["val_fraction"] == 0.2
    assert saved["optim"] == {**saved["optim"], "optimizer": "adamw", "lr": 0.002}
    assert saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 64
    assert saved["data"]["binarize"] is False


TRAINING_OPTIONS = {
    "dae-conv-mask": [
        "--model",
        "dae",
        "--arch",
        "conv",
        "--conv-channels",
        "8",
        "16",
        "--noise",
        "mask",
        "--noise-level",
        "0.2",
        "--activation",
        "gelu",
    ],
    "ae-gaussian-adamw-cosine": [
        "--model",
        "ae",
        "--likelihood",
        "gaussian",
        "--sigma",
        "0.1",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.01",
        "--schedule",
        "cosine",
        "--warmup-steps",
        "3",
        "--min-lr-ratio",
        "0.1",
    ],
    "beta-vae-warmup-clip-binarize": [
        "--beta",
        "4",
        "--kl-warmup",
        "1",
        "--grad-clip",
        "1",
        "--binarize",
        "--early-stopping",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--image-size",
        "6",
    ],
}


@pytest.mark.parametrize("options", TRAINING_OPTIONS.values(), ids=TRAINING_OPTIONS.keys())
def test_training_options_reach_the_saved_config(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", *options, "--epochs", "2", "--no-progress", "--out", run
    )
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    flat = {k: v for section in saved.values() for k, v in section.items()}
    if "--model" in options:
        assert flat["model"] == options[options.index("--model") + 1]
    if "--binarize" in options:
        assert flat["binarize"] and flat["beta"] == 4 and flat["grad_clip"] == 1
        assert flat["image_size"] == [6, 6] and flat["data_shape"] == [1, 6, 6]
    load_checkpoint(run)  # loads back
    assert png_size(run / "samples.png")[0] > 0


def test_tensorboard_logs_beside_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--tensorboard", "--epochs", "1", *FAST, "--out", run)[0] == 0
    assert any((run / "tensorboard").iterdir())


def test_force_replaces_an_existing_run(trained: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "notes.txt").write_text("mine")
    code = run_cli(
        capsys, "train", "--force", "--latent-dim", "3", "--epochs", "1", *FAST, "--out", run
    )[0]
    assert code == 0
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 3
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


# --- datasets -------------------------------------------------------------------------------


def _random_png(path: Path, size: tuple[int, int], mode: str = "L", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def test_image_folder_dataset_trains_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for label in ("cats", "dogs"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(12):
            _random_png(tmp_path / "pets" / label / f"{i}.png", (10, 8), seed=i)
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        "--dataset",
        tmp_path / "pets",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        run,
    )
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["model"]["data_shape"] == [1, 8, 10]
    assert png_size(run / "reconstructions.png") == grid_size(2, 5, 8, 10)  # 5 test images


def test_npz_dataset_trains_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "arrays.npz", x=x, y=rng.integers(0, 3, 40))
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        tmp_path / "arrays.npz",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        run,
    )
    assert code == 0, err
    assert all((run / name).is_file() for name in ("samples.png", "interpolation.png"))


def test_mixed_image_sizes_train_with_image_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mixed").mkdir()
    for i in range(10):
        _random_png(tmp_path / "mixed" / f"{i}.png", (8 + i % 2, 8), mode="RGB", seed=i)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--dataset", tmp_path / "mixed", "--out", run, *FAST, "--epochs", "1"
    )
    assert_one_line_error(code, err, "different sizes")
    assert not run.exists()
    code, _, err = run_cli(
        capsys,
        "train",
        "--dataset",
        tmp_path / "mixed",
        "--out",
        run,
        *FAST,
        "--epochs",
        "1",
        "--image-size",
        "8",
        "8",
    )
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["model"]["data_shape"] == [3, 8, 8]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_the_mnist_example_command_with_local_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's example, on a tiny stand-in for MNIST (the real files are not downloaded)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    code, out, err = run_cli(
        capsys,
        "train",
        "--model",
        "vae",
        "--dataset",
        "mnist",
        "--latent-dim",
        "2",
        "--epochs",
        "2",
        "--out",
        "runs/mnist-vae",
        "--data-dir",
        tmp_path,
        "--no-download",
        "--no-progress",
    )
    assert code == 0, err
    assert out.splitlines()[-4] == "runs/mnist-vae"
    assert png_size(Path("runs/mnist-vae/samples.png")) == grid_size(8, 8, 28, 28)


# --- sample, reconstruct, interpolate, info -------------------------------------------------


def test_sample_writes_a_grid_where_out_says(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "sample", trained, "--n", "20", "--out", tmp_path / "s.png")
    assert (code, out, err) == (0, f"{tmp_path / 's.png'}\n", "")
    assert png_size(tmp_path / "s.png") == grid_size(5, 4)  # 20 -> 4 columns, 5 rows
    code, out, _ = run_cli(capsys, "sample", trained / "last", "--n", "5", "--out", tmp_path)
    assert code == 0 and out == f"{tmp_path / 'samples.png'}\n"  # a folder gets the default name
    assert png_size(tmp_path / "samples.png") == grid_size(1, 5)


def test_sample_is_reproducible_by_seed(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, seed in (("a.png", 3), ("b.png", 3), ("c.png", 4)):
        run_cli(capsys, "sample", trained, "--seed", seed, "--n", "4", "--out", tmp_path / name)
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.png", "b.png", "c.png"))
    assert a == b != c


def test_reconstruct_puts_originals_above_reconstructions(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "r.png"
    code, out, _ = run_cli(
        capsys,
        "reconstruct",
        trained,
        "--n",
        "6",
        "--split",
        "val",
        "--checkpoint",
        "last",
        "--out",
        out_png,
    )
    assert code == 0 and out.splitlines()[-1] == str(out_png)
    assert png_size(out_png) == grid_size(2, 6)


def test_interpolate_between_dataset_indices(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "i.png"
    code, out, _ = run_cli(
        capsys,
        "interpolate",
        trained,
        "--from",
        "3",
        "--to",
        "-1",
        "--steps",
        "5",
        "--spherical",
        "--out",
        out_png,
    )
    assert code == 0 and out.splitlines()[-1] == str(out_png)
    assert png_size(out_png) == grid_size(1, 7)


def test_interpolate_between_image_files(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = _random_png(tmp_path / "start.png", (8, 8))
    end = _random_png(tmp_path / "end.png", (20, 16), mode="RGB", seed=1)  # resized, made gray
    out_png = tmp_path / "strip.png"
    code, _, err = run_cli(
        capsys, "interpolate", trained, "--from", start, "--to", end, "--out", out_png
    )
    assert code == 0, err
    assert png_size(out_png) == grid_size(1, 12)
    code, _, err = run_cli(
        capsys, "interpolate", trained, "--from", start, "--to", "7", "--out", out_png
    )
    assert code == 0, err


def test_info_shows_config_and_last_metrics(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "info", trained)
    assert code == 0
    assert "epochs      2 of 2" in out and "latent_dim = 2" in out and "val/loss = " in out
    code, out, _ = run_cli(capsys, "info", trained / "last", "--json")
    report = json.loads(out)
    assert report["config"]["model"]["model"] == "vae" and report["checkpoint_epoch"] == 2
    assert report["last_metrics"]["epoch"] == 2 and report["parameters"] > 0


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 2 and "vaelab train" in out


# --- bad input: one line on stderr, a non-zero exit, nothing written -------------------------


@pytest.fixture(scope="module")
def workspace(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of runs, broken checkpoints and bad data files to point vaelab at."""
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(trained, root / "run")
    for name in ("corrupt", "truncated", "foreign", "no-config"):
        shutil.copytree(trained, root / name)
    for checkpoint in ("best", "last"):
        weights_file = root / "truncated" / checkpoint / "model.safetensors"
        weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
        (root / "corrupt" / checkpoint / "model.safetensors").write_bytes(b"\x00garbage" * 99)
        (root / "foreign" / checkpoint / "meta.json").write_text('{"format": "other-tool"}')
        (root / "no-config" / checkpoint / "config.json").write_text("{not json")
    (root / "pytorch").mkdir()
    torch.save({"weight": torch.zeros(2)}, root / "pytorch" / "model.pt")
    (root / "empty").mkdir()
    np.save(root / "bytes.npy", np.random.default_rng(0).uniform(0, 255, (30, 8, 8)))
    with_nan = np.full((30, 8, 8), 0.5)
    with_nan[4, 2, 2] = np.nan
    np.save(root / "nan.npy", with_nan)
    (root / "text.npy").write_text("not numpy")
    (root / "table.csv").write_text("1,2,3\n")
    (root / "fake.png").write_text("not an image")
    (root / "keep.png").write_bytes((trained / "samples.png").read_bytes())
    (root / "mixed").mkdir()
    _random_png(root / "mixed" / "a.png", (8, 8))
    _random_png(root / "mixed" / "b.png", (9, 9))
    (root / "section.toml").write_text("[model]\nlatent_dim = 3\n[optimiser]\nlr = 0.1\n")
    (root / "option.toml").write_text("[train]\nepoch = 3\n")
    (root / "value.toml").write_text('[model]\nlatent_dim = "two"\n')
    (root / "syntax.toml").write_text("[model\nlatent_dim = 3\n")
    return root


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
BAD_INPUTS = {
    # training data
    "missing dataset path": (["train", "--dataset", "missing.npy"], "missing.npy"),
    "dataset of the wrong format": (["train", "--dataset", "table.csv"], "unsupported file type"),
    "npy that is not numpy": (["train", "--dataset", "text.npy"], "text.npy"),
    "mixed image sizes": (["train", "--dataset", "mixed"], "--image-size"),
    "npy with NaN": (["train", "--dataset", "nan.npy"], "NaN"),
    "unknown dataset": (["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
    # model and training options
    "zero latent size": (["train", "--latent-dim", "0"], "latent size must be positive"),
    "negative latent size": (["train", "--latent-dim", "-2"], "latent size must be positive"),
    "unknown model": (["train", "--model", "gan"], "invalid choice: 'gan'"),
    "not an int": (["train", "--epochs", "ten"], "invalid int value: 'ten'"),
    "zero epochs": (["train", "--epochs", "0"], "epochs must be positive"),
    "three image sizes": (["train", "--image-size", "8", "8", "8"], "N or H W"),
    "cuda without a gpu": pytest.param(["train", "--device", "cuda"], "no CUDA GPU", marks=NO_CUDA),
    "out is a png": (["train", "--out", "figs/run.png"], "names the run folder"),
    # run folders and resuming
    "out holds another run": (["train", "--out", "run"], "already holds another run"),
    "resume a missing folder": (["train", "--resume", "nowhere"], "no such folder"),
    "resume a folder with no run": (["train", "--resume", "empty"], "holds no vaelab run"),
    "resume a truncated checkpoint": (
        ["train", "--resume", "truncated", "--epochs", "5"],
        "corrupt or truncated",
    ),
    "resume with a config": (
        ["train", "--resume", "run", "--config", "syntax.toml"],
        "drop --config",
    ),
    # config files
    "missing config": (["train", "--config", "missing.toml"], "does not exist"),
    "config with a bad section": (["train", "--config", "section.toml"], "optimiser"),
    "config with a bad option": (["train", "--config", "option.toml"], "unknown option(s) 'epoch'"),
    "config with a bad value": (["train", "--config", "value.toml"], "section [model]"),
    "config with a syntax error": (["train", "--config", "syntax.toml"], "not valid TOML"),
    "config that is an image": (["train", "--config", "keep.png"], "not valid TOML"),
    # checkpoints
    "missing run": (["sample", "nowhere"], "nowhere does not exist"),
    "folder with no run": (["sample", "empty"], "not a vaelab run"),
    "corrupt checkpoint": (["sample", "corrupt", "--out", "keep.png"], "corrupt"),
    "truncated checkpoint": (["reconstruct", "truncated"], "corrupt or truncated"),
    "foreign checkpoint": (["interpolate", "foreign"], "not a vaelab checkpoint"),
    "checkpoint without a config": (["info", "no-config"], "corrupt"),
    "pytorch checkpoint": (["sample", "pytorch"], "not a vaelab run"),
    # figure options
    "no samples": (["sample", "run", "--n", "0"], "--n must be at least 1"),
    "no reconstructions": (["reconstruct", "run", "--n", "-1"], "--n must be at least 1"),
    "too many samples": (["sample", "run", "--n", "1025"], "--n must be at most 1024"),
    "more than the split": (
        ["reconstruct", "run", "--split", "val", "--n", "1000"],
        "more than the val split holds (180 images)",
    ),
    "too many steps": (["interpolate", "run", "--steps", "5000"], "--steps must be at most 1024"),
    "numpy file as an end": (
        ["interpolate", "run", "--from", "bytes.npy"],
        "bytes.npy is not an image file or a dataset index",
    ),
    "info of unreadable weights": (["info", "corrupt"], "weights of checkpoint"),
    "png in a missing folder": (["sample", "run", "--out", "new/s.png"], "new does not exist"),
    "output not a png": (["sample", "run", "--out", "s.jpg"], "must be a .png"),
    "index out of range": (["interpolate", "run", "--from", "5000"], "index 5000 is out of range"),
    "end out of range": (["interpolate", "run", "--to", "-400"], "out of range"),
    "too few steps": (["interpolate", "run", "--steps", "1"], "--steps must be at least 2"),
    "missing image file": (["interpolate", "run", "--from", "no.png"], "no.png does not exist"),
    "image file not an image": (["interpolate", "run", "--to", "fake.png"], "fake.png"),
    "unknown split": (["reconstruct", "run", "--split", "dev"], "invalid choice: 'dev'"),
}


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_on_stderr_and_writes_nothing(
    args: list[str], fragment: str, workspace: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    no_bar = ["--no-progress"] if args[0] == "train" else []
    code, _, err = run_cli(capsys, *args, *no_bar)
    assert_one_line_error(code, err, fragment)
    assert "Traceback" not in err
    assert snapshot(workspace) == before


def test_bernoulli_data_out_of_range_is_refused(workspace: Path, monkeypatch, capsys) -> None:
    """Floats in [0, 255] for a Bernoulli decoder: refused, with the fix in the message.

    data/arrays.py also logs a warning about the range first (reported), so stderr may hold a
    `vaelab: warning:` line before the error.
    """
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code, _, err = run_cli(capsys, "train", "--dataset", "bytes.npy", "--no-progress")
    lines = err.splitlines()
    assert code == 1 and all(line.startswith("vaelab: warning: ") for line in lines[:-1])
    assert_one_line_error(code, lines[-1], "--likelihood gaussian")
    assert snapshot(workspace) == before


def test_force_with_bad_data_keeps_the_old_run(workspace: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workspace)
    shutil.copytree("run", "forced")
    before = snapshot(workspace / "forced")
    code, _, err = run_cli(capsys, "train", "--force", "--out", "forced", "--dataset", "nan.npy")
    after = snapshot(workspace / "forced")
    shutil.rmtree("forced")
    assert_one_line_error(code, err, "NaN")
    assert after == before


# --- training that fails midway -------------------------------------------------------------


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loss turns NaN in epoch 2 (patched in: real divergence is not reliable after a good
    epoch; test_cli_subprocess diverges for real with --lr 1e6 in epoch 1)."""
    steps = {"n": 0}
    original_loss = VAE.loss

    def loss(self: VAE, x: torch.Tensor, **kwargs: object) -> LossTerms:
        terms = original_loss(self, x, **kwargs)
        steps["n"] += self.training
        if steps["n"] > 12:  # 10 steps per digits epoch at batch size 128
            return LossTerms(terms.total * float("nan"), terms.recon, terms.kl)
        return terms

    monkeypatch.setattr(VAE, "loss", loss)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--epochs", "5", *FAST, "--out", run)
    assert_one_line_error(code, err, "in epoch 2")
    assert "nan" in err.lower() and "--lr" in err
    model, _, meta = load_checkpoint(run, prefer="last")
    assert meta["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    assert run_cli(capsys, "sample", run, "--out", tmp_path / "s.png")[0] == 0
