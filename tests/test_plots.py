"""The figures of `vaelab.analysis.plots` and `plot_run`, for each model, 2-D and 5-D latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from vaelab import ModelConfig, RunConfig, VaelabError, build_model, train
from vaelab.analysis.grids import manifold_latents, most_active, traversal_latents
from vaelab.analysis.latents import Plane
from vaelab.analysis.plots import (
    curve_limits,
    interpolation_strips,
    latent_map,
    latent_traversals,
    manifold_grid,
    reconstructions_figure,
    samples_grid,
    tick_labels,
    training_curves,
)
from vaelab.analysis.run_figures import FIGURES, choose_pairs, draw_figures
from vaelab.cli.plot import plot_run
from vaelab.figures import mosaic, to_display
from vaelab.runs import load_run

SHAPE = (1, 8, 8)


def tiny_model(kind: str = "vae", latent_dim: int = 2, channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        model=kind, latent_dim=latent_dim, hidden_dims=(16,), data_shape=(channels, 8, 8)
    )
    return build_model(config).eval()


def record_decodes(model, monkeypatch) -> list[torch.Tensor]:
    """Wrap model.decode so that every z it is given is kept."""
    seen: list[torch.Tensor] = []
    decode = model.decode

    def spy(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return decode(z)

    monkeypatch.setattr(model, "decode", spy)
    return seen


def only_image(fig: Figure) -> np.ndarray:
    (ax,) = fig.axes
    (image,) = ax.get_images()
    return np.asarray(image.get_array())


# --- the figure functions, on untrained models -------------------------------------------


def test_latent_map_colours_each_class_with_a_legend() -> None:
    points = torch.randn(60, 2)
    labels = torch.arange(60) % 3
    fig = latent_map(points, labels, ("zero", "one", "two"), title="codes", xlabel="a", ylabel="b")
    (ax,) = fig.axes
    assert ax.get_title() == "codes" and ax.get_xlabel() == "a" and ax.get_ylabel() == "b"
    assert len(ax.collections) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 60


def test_latent_map_without_labels_has_no_legend() -> None:
    fig = latent_map(np.random.default_rng(0).normal(size=(10, 2)), title="codes")
    (ax,) = fig.axes
    assert ax.get_legend() is None and len(ax.collections) == 1


def test_manifold_of_a_2d_vae_decodes_the_priors_quantiles(monkeypatch) -> None:
    model = tiny_model("vae", 2)
    seen = record_decodes(model, monkeypatch)
    fig = manifold_grid(model, n=7)
    z = torch.cat(seen)
    q = torch.special.ndtri(torch.linspace(0.05, 0.95, 7, dtype=torch.float64)).float()
    assert z.shape == (49, 2)
    grid = z.reshape(7, 7, 2)  # rows top to bottom, columns left to right
    assert torch.allclose(grid[0, :, 0], q, atol=1e-6)  # z1 rises left to right
    assert torch.allclose(grid[:, 0, 1], q.flip(0), atol=1e-6)  # z2 rises bottom to top
    assert only_image(fig).shape == (7 * 9 + 1, 7 * 9 + 1)
    assert "quantiles" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()


def test_manifold_of_a_2d_autoencoder_uses_its_own_codes() -> None:
    codes = torch.randn(200, 2) * torch.tensor([5.0, 0.1]) + 10
    grid = manifold_latents(2, codes, prior=False, n=5)
    p = torch.linspace(0.05, 0.95, 5, dtype=torch.float64)
    assert torch.allclose(grid.x_values, torch.quantile(codes[:, 0].double(), p).float())
    assert torch.allclose(grid.y_values, torch.quantile(codes[:, 1].double(), p).float().flip(0))
    fig = manifold_grid(tiny_model("ae", 2), codes, n=5)
    assert "no prior" in fig.axes[0].get_title()


def test_manifold_of_a_5d_space_spans_two_principal_axes() -> None:
    codes = torch.randn(300, 5) @ torch.diag(torch.tensor([3.0, 2.0, 0.5, 0.2, 0.1])) + 1
    grid = manifold_latents(5, codes, prior=True, n=5)
    plane = Plane.fit(codes)
    offsets = grid.z - plane.center
    in_plane = plane.lift(plane.project(grid.z)) - plane.center
    assert torch.allclose(offsets, in_plane, atol=1e-4)  # no component off the plane
    extent = plane.project(grid.z).abs().amax(dim=0)
    assert torch.allclose(extent, 2 * plane.scales, rtol=1e-4)
    fig = manifold_grid(tiny_model("vae", 5), codes, n=5)
    assert "principal" in fig.axes[0].get_xlabel()


def test_manifold_grid_needs_codes_beyond_a_2d_prior() -> None:
    with pytest.raises(ValueError, match="codes"):
        manifold_latents(5, None, prior=True)


def test_samples_grid_is_one_square_image_in_gray_or_rgb() -> None:
    gray = samples_grid(torch.rand(16, 1, 8, 8), title="samples")
    assert only_image(gray).shape == (4 * 9 + 1, 4 * 9 + 1)
    rgb = samples_grid(torch.rand(6, 3, 8, 8), title="samples", cols=3)
    assert only_image(rgb).shape == (2 * 9 + 1, 3 * 9 + 1, 3)
    assert gray.axes[0].get_title() == "samples"


def test_value_range_maps_to_black_and_white() -> None:
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2)
    shown = to_display(images, value_range=(-1.0, 1.0)).flatten().tolist()
    assert shown == [0.0, 0.5, 1.0, 1.0]
    assert to_display(torch.full((1, 1, 1, 1), float("nan"))).item() == 0.0
    with pytest.raises(ValueError):
        mosaic(torch.rand(5, 1, 2, 2), 2, 2)


def test_reconstructions_sit_below_their_originals() -> None:
    x, x_hat = torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8)
    fig = reconstructions_figure(x, x_hat, cols=2)
    array = only_image(fig)  # 2 row pairs of 2 columns
    assert array.shape == (4 * 9 + 1, 2 * 9 + 1)
    assert array[1:9, 1:9].max() == 0.0 and array[10:18, 1:9].min() == 1.0
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["original", "reconstruction"] * 2
    with pytest.raises(ValueError, match="shape"):
        reconstructions_figure(x, x_hat[:2])


@pytest.mark.parametrize(
    ("kind", "spherical", "rows_per_pair"),
    [("vae", None, 2), ("ae", None, 1), ("ae", True, 2), ("vae", False, 1)],
)
def test_interpolation_strips_one_row_per_pair_and_path(kind, spherical, rows_per_pair) -> None:
    x = torch.rand(4, *SHAPE)
    fig = interpolation_strips(
        tiny_model(kind, 3), [(x[0], x[1]), (x[2], x[3])], steps=5, spherical=spherical
    )
    rows = 2 * rows_per_pair
    assert only_image(fig).shape == (rows * 9 + 1, (5 + 2) * 9 + 1)
    assert len(fig.axes[0].get_yticklabels()) == rows
    assert fig.axes[0].get_title() and fig.axes[0].get_xlabel()


def test_traversals_show_the_most_active_dimensions_only() -> None:
    codes = torch.randn(100, 20) * torch.linspace(0.1, 2.0, 20)
    assert most_active(codes, 3).tolist() == [19, 18, 17]
    fig = latent_traversals(tiny_model("dae", 20), codes, steps=5, max_dims=16)
    assert only_image(fig).shape == (16 * 9 + 1, 5 * 9 + 1)
    assert "16 most active of 20" in " ".join(fig.axes[0].get_title().split())
    assert fig.axes[0].get_yticklabels()[0].get_text().startswith("$z_{20}$")


def test_traversal_moves_one_dimension_at_a_time() -> None:
    center, scales = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.5, 2.0])
    z = traversal_latents(center, scales, torch.tensor([2, 0]), steps=3).reshape(2, 3, 3)
    assert z[0, :, 2].tolist() == [-1.0, 3.0, 7.0] and (z[0, :, :2] == center[:2]).all()
    assert z[1, :, 0].tolist() == [-1.0, 1.0, 3.0] and (z[1, :, 1:] == center[1:]).all()


def test_training_curves_have_three_panels_of_train_and_validation() -> None:
    records = [
        {
            "epoch": e,
            "train/loss": 10.0 - e,
            "val/loss": 11.0 - e,
            "train/recon": 9.0,
            "val/recon": 9.5,
            "train/kl": 1.0,
            "val/kl": 1.5,
        }
        for e in (1, 2, 3)
    ]
    fig = training_curves(records)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.get_lines()) == 2
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() and ax.get_title()
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]


def test_training_curves_without_records_say_so() -> None:
    fig = training_curves([])
    assert all("not recorded" in [t.get_text() for t in ax.texts] for ax in fig.axes)


def test_a_flat_noisy_kl_curve_is_not_drawn_as_instability() -> None:
    kl = [6.0, 6.3, 5.7, 6.2, 5.8, 6.1]  # ±0.3 nats of noise around 6
    records = [
        {"epoch": e + 1, "train/loss": 150.0 - e, "train/recon": 144.0 - e, "train/kl": v}
        for e, v in enumerate(kl)
    ]
    loss_ax, _, kl_ax = training_curves(records).axes
    low, high = kl_ax.get_ylim()
    assert low == 0.0 and high >= 6.3  # from 0, so the noise is a twentieth of the panel
    low, high = loss_ax.get_ylim()
    assert high - low >= 15.0  # at least 10% of a loss of 150
    low, high = curve_limits([0.1, 0.2])
    assert high - low >= 2.0  # at least 2 nats, however small the values
    assert curve_limits([10.0, 50.0]) == pytest.approx((8.0, 52.0))  # a real trend: as it is


def test_ticks_show_float_noise_around_zero_as_zero() -> None:
    labels = tick_labels(torch.linspace(-2.0, 2.0, 15) * 0.07)
    assert labels[7] == "0" and not any("e-" in label for label in labels)
    assert tick_labels(torch.tensor([-1.0, -1.2e-7, 1.0])) == ["-1", "0", "1"]
    assert tick_labels(torch.tensor([-2.0, 0.0, 2.0]), sign=True) == ["-2", "0", "+2"]
    assert tick_labels(torch.tensor([1e-8, 2e-8])) == ["1e-08", "2e-08"]  # small but not noise
    fig = manifold_grid(tiny_model("vae", 2), n=15)  # Φ⁻¹(0.5) comes out as -2.8e-16
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert "0" in texts and not any("e-" in text for text in texts)


def test_pairs_join_different_classes() -> None:
    y = torch.tensor([0, 0, 1, 1, 2])
    pairs = choose_pairs(y, 5, 20, torch.Generator().manual_seed(0))
    assert len(pairs) == 20 and all(y[a] != y[b] for a, b in pairs)
    unlabelled = choose_pairs(None, 3, 10, torch.Generator().manual_seed(0))
    assert all(a != b for a, b in unlabelled)


# --- plot_run on trained runs --------------------------------------------------------------


def tiny_config(kind: str, latent_dim: int, **data: object) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"model": kind, "latent_dim": latent_dim, "hidden_dims": [32]},
            "data": {"dataset": "digits", **data},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 2, "batch_size": 128, "device": "cpu"},
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Trained tiny runs on digits, by (model, latent_dim)."""
    root = tmp_path_factory.mktemp("runs")
    found = {}
    for kind in ("vae", "ae", "dae"):
        for dim in (2, 5):
            found[kind, dim] = train(
                tiny_config(kind, dim), root / f"{kind}{dim}", progress=False
            ).run_dir
    return found


def assert_pngs(paths: list[Path], folder: Path) -> None:
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURES]
    for path in paths:
        assert path.parent == folder
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
            assert np.asarray(image.convert("L"), dtype=np.float64).std() > 0
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.parametrize("kind", ["vae", "ae", "dae"])
@pytest.mark.parametrize("dim", [2, 5])
def test_plot_run_writes_every_figure(runs, kind, dim) -> None:
    paths = plot_run(runs[kind, dim])
    assert_pngs(paths, runs[kind, dim] / "plots")


def test_plot_run_into_a_folder_from_a_checkpoint(runs, tmp_path) -> None:
    out = tmp_path / "figures" / "here"
    paths = plot_run(runs["vae", 2] / "last", out, split="val", max_points=50)
    assert_pngs(paths, out)


def test_latent_map_projections(runs) -> None:
    loaded = load_run(runs["vae", 5], checkpoint="last")
    pca = draw_figures(loaded, projection="pca", max_points=100)["latent_map"].axes[0]
    assert pca.get_xlabel().startswith("principal axis 1") and "PCA" in pca.get_title()
    assert sum(len(c.get_offsets()) for c in pca.collections) == 100
    tsne = draw_figures(loaded, projection="tsne", max_points=100)["latent_map"].axes[0]
    assert tsne.get_xlabel() == "t-SNE 1" and "t-SNE" in tsne.get_title()
    two_d = draw_figures(load_run(runs["ae", 2]), projection="tsne")["latent_map"].axes[0]
    assert two_d.get_xlabel() == "$z_1$"  # a 2-D space is drawn as it is


def test_plot_run_rejects_bad_input(runs, tmp_path) -> None:
    with pytest.raises(VaelabError, match="unknown projection 'umap'"):
        plot_run(runs["vae", 2], projection="umap")
    with pytest.raises(VaelabError, match="does not exist"):
        plot_run(tmp_path / "missing")
    with pytest.raises(VaelabError, match="max points"):
        plot_run(runs["vae", 2], max_points=1)
    with pytest.raises(VaelabError, match="unknown split"):
        plot_run(runs["vae", 2], split="holdout")


def test_plot_run_rejects_an_empty_split(tmp_path) -> None:
    run = train(tiny_config("ae", 2, val_fraction=0.0), tmp_path / "run", progress=False)
    with pytest.raises(VaelabError, match="val split .* is empty"):
        plot_run(run.run_dir, split="val")


def test_load_run_finds_moved_data_and_a_non_empty_split(tmp_path, digits_x) -> None:
    data = tmp_path / "digits.npy"
    np.save(data, digits_x[:120].numpy())
    config = tiny_config("vae", 2, dataset=str(data), test_fraction=0.0)
    run = train(config, tmp_path / "run", progress=False).run_dir
    loaded = load_run(run)
    assert loaded.split == "val" and loaded.y is None and len(loaded.x) == 12
    moved = data.rename(tmp_path / "moved.npy")
    with pytest.raises(VaelabError, match="does not exist"):
        load_run(run)
    assert load_run(run, dataset=str(moved), split="train").x.shape == (108, 1, 8, 8)
