"""The figures of one run agree with each other and with the explorer: one latent plane with a
fixed orientation, and examples picked evenly over the split rather than its first images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vaelab import RunConfig, train
from vaelab.analysis import run_figures
from vaelab.analysis.latents import Plane, encode_dataset, latent_plane
from vaelab.figures import spread_indices
from vaelab.runs import load_run


@pytest.fixture(scope="module")
def run5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VAE with a 5-D latent space on digits."""
    config = RunConfig.from_dict(
        {
            "model": {"latent_dim": 5, "hidden_dims": [32]},
            "data": {"dataset": "digits"},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 3, "batch_size": 128, "device": "cpu"},
        }
    )
    return train(config, tmp_path_factory.mktemp("consistency") / "vae5", progress=False).run_dir


def skewed_codes(n: int = 400, dim: int = 5) -> torch.Tensor:
    """(n, dim) codes with clearly separated principal variances along mixed directions."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    spread = torch.tensor([3.0, 1.5, 0.5, 0.3, 0.1])[:dim]
    return (torch.randn(n, dim, generator=generator) * spread) @ basis.T + 0.7


# --- the plane ------------------------------------------------------------------------------


def test_each_principal_axis_has_a_positive_largest_loading() -> None:
    plane = Plane.fit(skewed_codes())
    for axis in plane.axes:
        assert axis[axis.abs().argmax()] > 0


def test_the_plane_does_not_depend_on_order_subset_or_the_svds_sign(monkeypatch) -> None:
    codes = skewed_codes()
    plane = Plane.fit(codes)
    shuffled = Plane.fit(
        codes[torch.randperm(len(codes), generator=torch.Generator().manual_seed(1))]
    )
    torch.testing.assert_close(shuffled.axes, plane.axes, atol=1e-5, rtol=0)
    for subset in (codes[::2], codes[1::3], codes[: len(codes) // 2]):
        cosines = (Plane.fit(subset).axes * plane.axes).sum(dim=1)
        assert (cosines > 0.9).all(), cosines  # the same orientation, not a mirror image
    svd = torch.linalg.svd

    def flipped(a: torch.Tensor, full_matrices: bool = True):  # an SVD that picks other signs
        u, s, vh = svd(a, full_matrices=full_matrices)
        return -u, s, -vh

    monkeypatch.setattr(torch.linalg, "svd", flipped)
    torch.testing.assert_close(Plane.fit(codes).axes, plane.axes)


# --- the figures of a run share it ----------------------------------------------------------


def spy_on_figures(monkeypatch) -> dict[str, object]:
    """Keep the plane `draw_figures` gives the manifold and the points it gives the map."""
    seen: dict[str, object] = {}
    manifold_grid, latent_map = run_figures.manifold_grid, run_figures.latent_map

    def manifold_spy(model, codes, **options):
        seen["manifold_plane"] = options["plane"]
        return manifold_grid(model, codes, **options)

    def map_spy(points, *args, **options):
        seen["map_points"] = points
        return latent_map(points, *args, **options)

    monkeypatch.setattr(run_figures, "manifold_grid", manifold_spy)
    monkeypatch.setattr(run_figures, "latent_map", map_spy)
    return seen


def test_latent_map_and_manifold_of_a_5d_run_use_one_plane(run5: Path, monkeypatch) -> None:
    loaded = load_run(run5)
    codes = encode_dataset(loaded.run.model, loaded.x)
    expected = latent_plane(codes)
    seen = spy_on_figures(monkeypatch)
    run_figures.draw_figures(loaded, max_points=50)  # the map shows a subset ...
    plane = seen["manifold_plane"]
    for name in ("center", "axes", "scales"):
        assert torch.equal(getattr(plane, name), getattr(expected, name))
    # ... drawn on the plane of all the codes, the manifold's, not one fitted to the subset.
    points = torch.as_tensor(seen["map_points"])
    assert points.shape == (50, 2)
    distance = torch.cdist(points.double(), expected.project(codes).double()).min(dim=1).values
    assert distance.max() < 1e-5
    # The top-left image of the manifold is the map's top-left: small axis 1, large axis 2.
    from vaelab.analysis.grids import manifold_latents

    grid = manifold_latents(5, codes, prior=True, n=5, plane=plane)
    top_left = plane.project(grid.z[:1])[0]
    assert top_left[0] < 0 < top_left[1]


def test_the_subset_size_does_not_change_the_plane(run5: Path, monkeypatch) -> None:
    loaded = load_run(run5)
    planes = []
    for max_points in (20, 5000):
        seen = spy_on_figures(monkeypatch)
        run_figures.draw_figures(loaded, max_points=max_points, seed=max_points)
        planes.append(seen["manifold_plane"])
    assert torch.equal(planes[0].axes, planes[1].axes)


def test_the_explorers_plane_is_the_figures_plane(run5: Path, monkeypatch) -> None:
    pytest.importorskip("fastapi")
    from vaelab.explorer.runs import load_served_run

    seen = spy_on_figures(monkeypatch)
    run_figures.draw_figures(load_run(run5), max_points=100)
    served = load_served_run("vae5", run5)
    for name in ("center", "axes", "scales"):
        assert torch.equal(getattr(served.plane, name), getattr(seen["manifold_plane"], name))


# --- examples spread over the split ---------------------------------------------------------


def test_spread_indices_reach_both_ends_without_repeats() -> None:
    assert spread_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert spread_indices(3, 10).tolist() == [0, 1, 2]
    assert spread_indices(7, 1).tolist() == [0] and len(spread_indices(0, 4)) == 0


def test_reconstructions_of_a_class_ordered_split_show_every_class(run5: Path, monkeypatch) -> None:
    loaded = load_run(run5)
    order = loaded.y.argsort(stable=True)  # the split stored class by class, as a folder is
    ordered = dataclasses.replace(loaded, x=loaded.x[order], y=loaded.y[order])
    model = ordered.run.model
    shown: list[torch.Tensor] = []
    reconstruct = model.reconstruct

    def spy(x: torch.Tensor) -> torch.Tensor:
        shown.append(x.detach().clone())
        return reconstruct(x)

    monkeypatch.setattr(model, "reconstruct", spy)
    run_figures.draw_figures(ordered, max_points=50)
    (x,) = shown
    matches = (x[:, None] == ordered.x[None]).flatten(2).all(dim=2)  # (shown, N)
    classes = {int(ordered.y[row.nonzero()[0]]) for row in matches}
    assert len(x) == run_figures.N_RECONSTRUCTIONS
    assert classes == set(ordered.y.tolist())  # all ten digits, not the first two
