"""What the `vaelab` command says while it runs: `info` as a config file that `train --config`
reads back, one prefix per warning, and a line for each conversion that would otherwise be
silent (an RGB image for a gray run, a 2-D array read as images, no KL for a model without
a prior)."""

from __future__ import annotations

import ast
import logging
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_cli import FAST, run_cli
from vaelab import DataConfig, load_data, train
from vaelab.cli import console, main
from vaelab.cli.app import build_parser
from vaelab.cli.train_flags import train_config_from_args
from vaelab.data.images import image_to_tensor, load_image_file
from vaelab.training.checkpoint import read_config, resolve_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelab"
PREFIXES = ("note:", "warning:", "error:", "vaelab:")


# --- vaelab info: valid TOML, read back by train --config ---------------------------------------


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run with None options (sigma: learned, no early stopping) and set ones."""
    run = tmp_path_factory.mktemp("info") / "run"
    args = ["train", "--epochs", "1", "--out", str(run), *FAST, "-q", "--likelihood", "gaussian"]
    args += ["--hidden-dims", "32", "--grad-clip", "5", "--image-size", "6"]
    assert main(args) == 0
    return run


def test_info_is_toml_that_train_config_reads_back_as_the_same_run_config(
    gaussian_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "info", gaussian_run)
    assert (code, err) == (0, "")
    parsed = tomllib.loads(out)  # the whole report, comments and all
    assert set(parsed) == {"model", "data", "optim", "train"}
    assert "null" not in out and "None" not in out
    assert "# sigma: learned" in out.splitlines()  # None: left out, its meaning a comment
    assert "sigma" not in parsed["model"] and parsed["optim"]["grad_clip"] == 5
    assert "# early_stopping: off" in out.splitlines()
    config_file = tmp_path / "info.toml"
    config_file.write_text(out)
    args = build_parser().parse_args(["train", "--config", str(config_file), "--out", "x"])
    config, _, _ = train_config_from_args(args)
    assert config == read_config(resolve_checkpoint(gaussian_run, prefer="best"))
    code, _, err = run_cli(capsys, "train", "--config", config_file, "--out", tmp_path / "again")
    assert code == 0, err


# --- one prefix per warning ------------------------------------------------------------------


def test_no_warning_repeats_the_prefix_the_console_adds() -> None:
    """The console writes `vaelab: warning: MESSAGE` (info lines get no prefix); a warning
    that starts with its own `note:` printed `vaelab: warning: note: ...`."""
    doubled = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("warning", "error", "critical", "exception")
                and node.args
            ):
                continue
            first = node.args[0]
            if isinstance(first, ast.JoinedStr) and first.values:
                first = first.values[0]
            text = first.value if isinstance(first, ast.Constant) else None
            if isinstance(text, str) and text.lower().startswith(PREFIXES):
                doubled.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert doubled == []


def test_the_console_prints_one_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    package = logging.getLogger("vaelab")
    saved = package.handlers, package.level, package.propagate
    console.configure_logging(quiet=False)
    try:
        logging.getLogger("vaelab.test").warning("the images are not binary")
    finally:
        package.handlers, package.level, package.propagate = saved
    assert capsys.readouterr().err == "vaelab: warning: the images are not binary\n"


def test_eval_warns_about_grey_images_with_one_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "bernoulli"
    assert main(["train", "--epochs", "1", "--model", "ae", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "eval", run, "--limit", "10")
    assert code == 0
    assert err.startswith("vaelab: warning: the images are not binary, so a bernoulli")
    assert "note:" not in err


# --- conversions that say so ------------------------------------------------------------------


def test_an_rgb_image_for_a_gray_run_is_converted_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "colour.png"
    Image.fromarray(np.full((10, 10, 3), (200, 30, 30), dtype=np.uint8)).save(path)
    caplog.set_level(logging.INFO, logger="vaelab")
    x = load_image_file(path, (1, 8, 8))
    assert x.shape == (1, 8, 8)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} is 10x10; resized to 8x8 for this run",
        f"{path} is in colour; converted to grayscale (luma) for this 1-channel run",
    ]
    caplog.clear()
    with Image.open(path) as image:
        assert image_to_tensor(image, (1, 8, 8)).shape == (1, 8, 8)
    assert "converted to grayscale" in caplog.text
    caplog.clear()
    assert image_to_tensor(Image.new("L", (8, 8)), (3, 8, 8)).shape == (3, 8, 8)
    assert "the image is grayscale; converted to RGB" in caplog.text
    caplog.clear()
    load_image_file(path, (3, 10, 10))  # nothing to convert: nothing said
    assert caplog.records == []


def test_a_2d_array_says_how_it_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "vectors.npy"
    np.save(path, np.random.default_rng(0).random((100, 20), dtype=np.float32))
    caplog.set_level(logging.INFO, logger="vaelab")
    splits = load_data(DataConfig(dataset=str(path)), progress=False)
    assert splits.shape == (1, 1, 20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path} holds a 2-D array (100, 20) and 20 is not a square: read as 1x20 images, "
        "shape (1, 1, 20); save images as (N, H, W) or (N, C, H, W) to keep their shape"
    ]


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_the_kl_is_logged_only_for_a_model_with_a_prior(
    model: str, tiny_run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vaelab")
    train(tiny_run(1, model={"model": model}), tmp_path / "run", progress=False)
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch"))
    assert ("train/kl" in summary) == (model == "vae"), summary
    assert "train/recon" in summary and "val/loss" in summary
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"train/kl"' in metrics  # the record keeps its keys for every model
