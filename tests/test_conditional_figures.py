"""Figures and commands of conditional runs (cvae, m2): samples per class, analogies,
completions of partly observed images, the standard figures of training, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_cli import assert_one_line_error, grid_size, png_size, run_cli, snapshot
from vaelab import RunConfig, load, train
from vaelab.analysis.conditional_figures import analogy_grid, class_grid, completion_grid
from vaelab.cli.run_images import prior_samples, save_grid, standard_figures
from vaelab.data import DataConfig, load_data
from vaelab.figures import MIN_CELL_PIXELS
from vaelab.runs import open_run

TINY = {
    "model": {"latent_dim": 2, "hidden_dims": [32]},
    "data": {"dataset": "digits"},
    "optim": {"lr": 3e-3},
    "train": {"epochs": 2, "batch_size": 128, "device": "cpu"},
}
OBSERVED = "top-left,bottom-left"  # the canonical name of --observe left


def _train(root: Path, name: str, model: dict | None = None, data: dict | None = None) -> Path:
    values = {**TINY, "model": {**TINY["model"], **(model or {})}}
    values["data"] = {**TINY["data"], **(data or {})}
    run = root / name
    train(RunConfig.from_dict(values), run, progress=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny 2-epoch digits runs: a label cvae, an m2 with 50 labels, a cvae observing the left
    half (with a learned p(z|y)), and a plain vae."""
    root = tmp_path_factory.mktemp("conditional")
    return {
        "cvae": _train(root, "cvae", {"model": "cvae"}),
        "m2": _train(root, "m2", {"model": "m2"}, {"labelled": 50}),
        "observed": _train(
            root, "observed", {"model": "cvae", "observe": "left", "conditional_prior": True}
        ),
        "vae": _train(root, "vae"),
    }


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    split = load_data(DataConfig(dataset="digits"), progress=False).test
    return split.x, split.y


SCALE = MIN_CELL_PIXELS // 8  # figures enlarge 8x8 digits 7 times


def cells(path: Path, rows: int, columns: int) -> np.ndarray:
    """The 8x8 images of a figures.py PNG grid (2 pixels apart), at their original size:
    (rows, columns, 8, 8) uint8."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("L"))[::SCALE, ::SCALE]
    return np.stack(
        [
            [array[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10] for c in range(columns)]
            for r in range(rows)
        ]
    )


def as_png_values(images: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] (..., 1, 8, 8) as a grid shows them (the data range is [0, 1])."""
    return images[..., 0, :, :].mul(255).round().to(torch.uint8).numpy()


# --- the grids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cvae", "m2"])
def test_row_i_of_the_class_grid_is_decoded_with_label_i(runs, kind) -> None:
    model = load(runs[kind]).eval()
    per_class, classes = 3, model.classes
    grid = class_grid(model, per_class, seed=5)
    assert grid.shape == (classes * per_class, 1, 8, 8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    with torch.no_grad():
        z = model.draw_codes(len(labels), y=labels, generator=torch.Generator().manual_seed(5))
        for i in range(classes):
            row = slice(i * per_class, (i + 1) * per_class)
            own = model.decode(z[row], torch.full((per_class,), i))
            other = model.decode(z[row], torch.full((per_class,), (i + 1) % classes))
            torch.testing.assert_close(grid[row], own)
            assert not torch.allclose(grid[row], other, atol=1e-3)


@pytest.mark.parametrize("kind", ["cvae", "m2"])
def test_column_j_plus_1_of_the_analogy_grid_decodes_the_code_with_label_j(
    runs, kind, digits_test
) -> None:
    model = load(runs[kind]).eval()
    x, y = digits_test[0][:4], digits_test[1][:4]
    grid = analogy_grid(model, x, y).view(4, model.classes + 1, 1, 8, 8)
    assert torch.equal(grid[:, 0], x)  # the images themselves come first
    with torch.no_grad():
        mu = model.encode(x, y).mean
        for j in range(model.classes):
            torch.testing.assert_close(grid[:, j + 1], model.decode(mu, torch.full((4,), j)))
    # the code is the image's own, encoded with its label: another label encodes another code
    with torch.no_grad():
        shifted = analogy_grid(model, x, (y + 1) % model.classes).view_as(grid)
    assert not torch.allclose(shifted[:, 1:], grid[:, 1:], atol=1e-4)


def test_an_m2_infers_the_labels_it_is_not_given(runs, digits_test) -> None:
    model = load(runs["m2"]).eval()
    x = digits_test[0][:5]
    with torch.no_grad():
        predicted = model.classify(x).argmax(dim=-1)
        torch.testing.assert_close(
            analogy_grid(model, x, torch.full((5,), -1)), analogy_grid(model, x, predicted)
        )


def test_completions_keep_the_observed_pixels_and_vary_the_rest(runs, digits_test) -> None:
    model = load(runs["observed"]).eval()
    x = digits_test[0][:3]
    grid = completion_grid(model, x, 4, seed=0).view(3, 5, 1, 8, 8)
    observed = model.condition.mask  # (1, 8, 8): the left half
    assert observed[:, :, :4].all() and not observed[:, :, 4:].any()
    shown, completions = grid[:, 0], grid[:, 1:]
    assert torch.equal(shown[:, observed], x[:, observed])
    assert torch.equal(shown[:, ~observed], torch.full_like(shown[:, ~observed], 0.5))
    assert torch.equal(completions[:, :, observed], x[:, None, observed].expand(-1, 4, -1))
    varies = completions[:, :, ~observed].std(dim=1) > 0  # (3, 32) across the completions
    assert varies.float().mean(dim=1).min() > 0.5  # most unobserved pixels of every image
    again = completion_grid(model, x, 4, seed=0)
    assert torch.equal(again, grid.flatten(0, 1))  # the seed fixes them


# --- vaelab sample ------------------------------------------------------------------------------


def test_sample_label_draws_n_images_of_that_class(runs, tmp_path, capsys) -> None:
    out = tmp_path / "threes.png"
    args = ("sample", runs["cvae"], "--label", 3, "--n", 64, "--device", "cpu", "--out", out)
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert png_size(out) == grid_size(8, 8)
    model = load(runs["cvae"])
    shown = cells(out, 8, 8).reshape(64, 8, 8)
    with torch.no_grad():
        for label in range(model.classes):
            y = torch.full((64,), label)
            images = model.sample(64, y=y, generator=torch.Generator().manual_seed(0))
            assert np.array_equal(shown, as_png_values(images)) == (label == 3)


@pytest.mark.parametrize(("n", "per_class"), [(None, 8), (20, 2), (64, 6), (65, 7), (3, 1)])
def test_sample_without_a_label_draws_a_row_per_class(runs, tmp_path, capsys, n, per_class):
    out = tmp_path / "classes.png"
    count = () if n is None else ("--n", n)
    code, _, err = run_cli(capsys, "sample", runs["m2"], *count, "--out", out)
    assert code == 0, err
    assert png_size(out) == grid_size(10, per_class)


def test_sample_of_an_unconditional_run_is_unchanged(runs, tmp_path, capsys) -> None:
    out = tmp_path / "vae.png"
    args = ("sample", runs["vae"], "--n", 30, "--seed", 4, "--device", "cpu", "--out", out)
    assert run_cli(capsys, *args)[0] == 0
    trained = open_run(runs["vae"])
    expected = tmp_path / "expected.png"
    save_grid(prior_samples(trained.model, 30, 4), expected, trained.value_range)
    assert out.read_bytes() == expected.read_bytes()


def test_sample_of_an_observed_run_completes_test_images(runs, tmp_path, capsys) -> None:
    out = tmp_path / "completions.png"
    assert run_cli(capsys, "sample", runs["observed"], "--n", 24, "--out", out)[0] == 0
    assert png_size(out) == grid_size(3, 8)  # 24 / 8 images, each with 7 completions


# --- vaelab analogy and complete -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cvae", "m2"])
def test_analogy_writes_a_row_per_image_and_a_column_per_class(
    runs, tmp_path, capsys, digits_test, kind
) -> None:
    out = tmp_path / "analogy.png"
    code, _, err = run_cli(capsys, "analogy", runs[kind], "--n", 4, "--out", out)
    assert code == 0, err
    assert png_size(out) == grid_size(4, 11)
    # the first column: test images spread over the split, the first and the last included
    x = digits_test[0]
    assert np.array_equal(cells(out, 4, 11)[[0, 3], 0], as_png_values(x[[0, -1]]))


def test_complete_keeps_the_observed_pixels_exactly(runs, tmp_path, capsys, digits_test) -> None:
    image = tmp_path / "digit.png"
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)  # every pixel different
    Image.fromarray(pixels).save(image)
    out = tmp_path / "completions.png"
    code, _, err = run_cli(
        capsys, "complete", runs["observed"], 0, image, -1, "--observe", "left", "--n", 5,
        "--seed", 3, "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert png_size(out) == grid_size(3, 6)  # a row per image: the observed part, 5 completions
    grid = cells(out, 3, 6)  # (3, 6, 8, 8)
    given = np.stack(
        [*as_png_values(digits_test[0][[0]]), pixels, *as_png_values(digits_test[0][[-1]])]
    )
    left, right = grid[..., :4], grid[..., 4:]  # observed, not observed
    assert np.array_equal(left, np.broadcast_to(given[:, None, :, :4], left.shape))
    assert (right[:, 0] == 128).all()  # the unobserved half of the first column: mid-grey
    spread = right[:, 1:].astype(float).std(axis=1)  # (3, 8, 4) across the completions
    assert (spread > 0).any(axis=(1, 2)).all()  # each image's completions differ


# --- bad input: one line, nothing written --------------------------------------------------------

BAD = {
    "label on an unconditional run": (
        ["sample", "vae", "--label", "3"],
        "needs a run conditional on class labels",
    ),
    "label out of range": (["sample", "cvae", "--label", "10"], "classes 0 to 9"),
    "negative label": (["sample", "m2", "--label", "-1"], "--label -1 is out of range"),
    "label on an observed run": (["sample", "observed", "--label", "1"], "--observe"),
    "gmm on a conditional run": (["sample", "cvae", "--sampler", "gmm"], "unconditional runs"),
    "analogy of an observed run": (["analogy", "observed"], "vaelab complete"),
    "analogy of a vae": (["analogy", "vae"], "this run is a vae"),
    "complete with a label cvae": (
        ["complete", "cvae", "0", "--observe", "left"],
        "trained on labels: complete needs --observe",
    ),
    "complete with another region": (
        ["complete", "observed", "0", "--observe", "top"],
        f"it observes {OBSERVED}",
    ),
    "complete a missing image": (
        ["complete", "observed", "missing.png", "--observe", "left"],
        "missing.png does not exist",
    ),
    "complete an unknown region": (
        ["complete", "observed", "0", "--observe", "middle"],
        "unknown quadrant 'middle'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, case) -> None:
    args, fragment = BAD[case]
    command, run, *rest = args
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(runs[run])
    code, _, err = run_cli(capsys, command, runs[run], *rest, "--out", out)
    assert_one_line_error(code, err, fragment)
    assert not any(out.iterdir())
    assert snapshot(runs[run]) == before


# --- the figures `vaelab train` draws ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "samples"), [("cvae", (10, 8)), ("m2", (10, 8)), ("observed", (8, 8))]
)
def test_training_a_conditional_run_draws_the_standard_figures(runs, kind, samples) -> None:
    paths = standard_figures(runs[kind])
    assert [p.name for p in paths] == ["samples.png", "reconstructions.png", "interpolation.png"]
    assert png_size(paths[0]) == grid_size(*samples)
    assert png_size(paths[1]) == grid_size(2, 10)
    assert png_size(paths[2]) == grid_size(1, 12)


def test_the_cli_trains_a_cvae_with_its_figures(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--model", "cvae", "--epochs", 1, "--latent-dim", 2, "--no-progress",
        "--out", run,
    )  # fmt: skip
    assert code == 0, err
    for name in ("samples.png", "reconstructions.png", "interpolation.png"):
        assert (run / name).is_file()


def test_interpolating_a_label_cvae_needs_the_label_of_its_start(runs, tmp_path, capsys) -> None:
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    out = tmp_path / "path.png"
    code, _, err = run_cli(capsys, "interpolate", runs["cvae"], "--from", 5, "--out", out)
    assert code == 0, err
    assert png_size(out) == grid_size(1, 12)
    out.unlink()
    code, _, err = run_cli(capsys, "interpolate", runs["cvae"], "--from", image, "--out", out)
    assert_one_line_error(code, err, "conditional on a class label")
    assert not out.exists()
    # an m2 infers the label of an image file with its classifier
    assert run_cli(capsys, "interpolate", runs["m2"], "--from", image, "--out", out)[0] == 0


# --- commands that do not take a condition yet refuse conditional runs in one line ------------


def test_export_and_compare_refuse_conditional_runs_and_pack_bundles_them(runs, capsys, tmp_path):
    pytest.importorskip("onnx", reason="vaelab export needs the export extra")
    for kind in ("cvae", "m2"):
        before = snapshot(runs[kind])
        code, _, err = run_cli(capsys, "export", runs[kind], "--out", tmp_path / f"{kind}-onnx")
        assert_one_line_error(code, err, f"cannot export this {kind} yet")
        code, _, err = run_cli(capsys, "compare", runs["vae"], runs[kind], "--out", tmp_path / kind)
        assert_one_line_error(code, err, f"is a {kind} run: compare measures unconditional")
        assert snapshot(runs[kind]) == before
        assert not (tmp_path / f"{kind}-onnx").exists() and not (tmp_path / kind).exists()
    bundle = tmp_path / "cvae.zip"
    code, _, err = run_cli(capsys, "pack", runs["cvae"], bundle, "--no-onnx", "--k", "5")
    assert code == 0, err
    model = load(bundle)
    assert model.needs_labels and model.sample(2, y=torch.tensor([3, 4])).shape == (2, 1, 8, 8)


def test_analogy_refuses_a_figure_too_large(runs, capsys, tmp_path):
    out = tmp_path / "analogy.png"
    code, _, err = run_cli(capsys, "analogy", runs["cvae"], "--n", 1000, "--out", out)
    assert_one_line_error(code, err, "too large a figure: use --n 93 or less")
    assert not out.exists()
