"""The disentanglement figures and the report's Disentanglement section, for data with known
factors (`--dataset shapes`); a run without factors keeps its report unchanged."""

from __future__ import annotations

import base64
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import RunConfig, train
from vaelab.analysis.factor_figures import (
    FACTOR_FIGURES,
    draw_factor_figures,
    factor_traversals,
    latent_labels,
    mutual_info_heatmap,
    traversal_codes,
)
from vaelab.analysis.report import format_value
from vaelab.analysis.run_figures import FIGURES
from vaelab.cli.evaluate_factors import disentanglement_run
from vaelab.cli.plot import plot_run, write_report
from vaelab.data import Factors
from vaelab.disentanglement import dci, factorvae_score, mig, sap
from vaelab.disentanglement.evaluate import (
    DisentanglementResult,
    evaluate_disentanglement,
    sample_rows,
)
from vaelab.models import ModelConfig, build_model
from vaelab.runs import load_run


def _train(path: Path, dataset: dict, latent_dim: int) -> Path:
    config = RunConfig.from_dict(
        {
            "model": {"model": "vae", "latent_dim": latent_dim, "hidden_dims": [32]},
            "data": dataset,
            "optim": {"lr": 3e-3},
            "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        }
    )
    return train(config, path, progress=False).run_dir


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    """A VAE with 4 latents, one epoch on the 16x16 shapes grid (922 test images)."""
    folder = tmp_path_factory.mktemp("factors") / "shapes"
    return _train(folder, {"dataset": "shapes", "image_size": 16}, latent_dim=4)


def embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_has_the_disentanglement_section(shapes_run: Path) -> None:
    path = write_report(shapes_run)
    page = path.read_text()
    head, section = page.split('<h2 id="disentanglement">Disentanglement</h2>')
    section = section.split("<h2>", 1)[0]  # up to the next section
    loaded = load_run(shapes_run)
    expected = evaluate_disentanglement(
        loaded.run.model, loaded.x, loaded.factors, loaded.factor_info, seed=0
    )
    assert "all 922 images of the test split" in section
    for name, value in expected.scores.items():
        assert f'<th>{name}</th><td class="num">{format_value(value)}</td>' in section
    assert "Chen et al. 2018" in section and "Kim &amp; Mnih 2018" in section  # definitions
    pngs = [shapes_run / "plots" / f"{name}.png" for name in FACTOR_FIGURES]
    assert embedded_images(section) == [png.read_bytes() for png in pngs]
    assert len(embedded_images(head)) == len(FIGURES)  # the run's own figures come first


def test_report_shows_a_disentanglement_record_of_eval_json(shapes_run: Path) -> None:
    result, _, eval_path = disentanglement_run(shapes_run, device="cpu")
    try:
        page = write_report(shapes_run).read_text()
    finally:
        eval_path.unlink()
    evaluation = page.split("<h2>Evaluation (eval.json)</h2>")[1].split("<h2>")[0]
    assert "<h3>best/test/disentanglement</h3>" in evaluation
    assert "not a record" not in evaluation  # its scores, not a dump of the JSON
    assert f"  {'mig':<22} {result.scores['mig']:8.4f}\n" in evaluation


def test_report_scores_a_random_subset_of_a_large_split(shapes_run: Path) -> None:
    loaded = load_run(shapes_run)
    drawn = draw_factor_figures(loaded, max_images=300, seed=3)
    chosen = sample_rows(len(loaded), 300, seed=3)
    assert drawn.images == drawn.result.examples == 300 and drawn.split_size == 922
    # Not the first 300: a split keeps the factor grid's order, which would hold one shape.
    assert not torch.equal(chosen, torch.arange(300))
    assert loaded.factors[chosen, 0].unique().numel() == 3
    expected = evaluate_disentanglement(
        loaded.run.model, loaded.x[chosen], loaded.factors[chosen], loaded.factor_info, seed=3
    )
    assert drawn.result.scores == expected.scores
    # The same sample as `vaelab eval --disentanglement --limit 300 --seed 3`.
    scored, _, eval_path = disentanglement_run(shapes_run, limit=300, seed=3, device="cpu")
    eval_path.unlink()
    assert scored.scores == drawn.result.scores
    assert int(drawn.reference) in chosen.tolist()
    assert torch.equal(sample_rows(5, 300), torch.arange(5))


def test_heatmap_shows_the_normalised_mutual_information(shapes_run: Path) -> None:
    drawn = draw_factor_figures(load_run(shapes_run))
    result = drawn.result
    ax = drawn.figures["factor_mutual_info"].axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), result.normalised_mutual_info)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z2", "z3", "z4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(result.factors.names)
    assert f"MIG {result.scores['mig']:.3f}" in ax.get_title()
    # Each traversal row names the factor `captured_factors` gives its latent.
    rows = drawn.figures["factor_traversals"].axes[0].get_yticklabels()
    for j, (row, factor) in enumerate(zip(rows, result.captured_factors(), strict=True)):
        if factor is None:
            assert row.get_text() == f"z{j + 1} — none"
        else:
            assert row.get_text().startswith(f"z{j + 1} — {factor} (")


def test_plot_writes_the_factor_figures(shapes_run: Path, tmp_path: Path) -> None:
    paths = plot_run(shapes_run, tmp_path)
    assert [p.name for p in paths] == [f"{n}.png" for n in (*FIGURES, *FACTOR_FIGURES)]


def test_run_without_factors_has_no_section(tmp_path: Path) -> None:
    run = _train(tmp_path / "digits", {"dataset": "digits"}, latent_dim=2)
    assert draw_factor_figures(load_run(run)) is None
    page = write_report(run).read_text()
    assert "Disentanglement" not in page and "factor_" not in page
    assert len(embedded_images(page)) == len(FIGURES)


# --- a hand-made case: z1 is x, z2 is noise, z3 is size ---------------------------------------


@pytest.fixture(scope="module")
def known() -> DisentanglementResult:
    names, sizes = ["shape", "size", "x"], (3, 4, 5)
    grid = np.array(list(itertools.product(*map(range, sizes))) * 20)  # (1200, 3)
    noise = np.random.default_rng(0).normal(size=len(grid))
    codes = np.stack([grid[:, 2] * 0.5, noise, -grid[:, 1] + 1.0], axis=1)  # (1200, 3)
    categorical = [True, False, False]
    values = [[float(v) for v in range(s)] for s in sizes]
    return DisentanglementResult(
        mig=mig(codes, grid, names=names),
        dci=dci(codes, grid, names=names),
        sap=sap(codes, grid, categorical, names=names),
        factorvae=factorvae_score(codes, grid, names=names),
        mig_posterior=None,
        factors=Factors(tuple(names), tuple(map(tuple, values)), tuple(categorical)),
        examples=len(grid),
        latent_dim=3,
        seed=0,
        seconds=0.0,
    )


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        ModelConfig(model=kind, data_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,))
    )


def test_labels_of_a_known_case(known: DisentanglementResult) -> None:
    assert latent_labels(known) == ["z1 — x (1.00)", "z2 — none", "z3 — size (1.00)"]
    fig = factor_traversals(_model("vae"), known, torch.rand(1, 8, 8), steps=5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == latent_labels(known)
    assert ax.images[0].get_array().shape[:2] == (3 * 9 + 1, 5 * 9 + 1)  # 3 rows of 5 tiles
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2.5", "-1.2", "0", "+1.2", "+2.5"]
    # Past max_rows, the latents holding most of some factor, in z order.
    few = factor_traversals(_model("vae"), known, torch.rand(1, 8, 8), max_rows=2).axes[0]
    assert [t.get_text() for t in few.get_yticklabels()] == ["z1 — x (1.00)", "z3 — size (1.00)"]
    heat = mutual_info_heatmap(known).axes[0]
    np.testing.assert_array_equal(heat.images[0].get_array(), known.normalised_mutual_info)
    assert [t.get_text() for t in heat.texts][:3] == ["0.00", "0.00", "1.00"]  # z1's row


def test_traversals_without_a_prior_use_the_codes_quantiles(known: DisentanglementResult) -> None:
    model = _model("ae")
    with pytest.raises(ValueError, match="need the codes"):
        factor_traversals(model, known, torch.rand(1, 8, 8))
    codes = torch.randn(100, 3)
    ax = factor_traversals(model, known, torch.rand(1, 8, 8), codes=codes, steps=3).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5%", "50%", "95%"]
    z = traversal_codes(torch.zeros(3), torch.tensor([1]), steps=3, prior=False, codes=codes)
    expected = torch.quantile(codes[:, 1].double(), torch.tensor([0.05, 0.5, 0.95]).double())
    torch.testing.assert_close(z[:, 1], expected.float())
    assert torch.equal(z[:, [0, 2]], torch.zeros(3, 2))


def test_prior_traversals_move_around_the_reference() -> None:
    z_ref = torch.tensor([0.3, -1.0, 2.0])
    z = traversal_codes(z_ref, torch.tensor([0, 2]), steps=9, prior=True)  # (18, 3)
    assert torch.equal(z[4], z_ref) and torch.equal(z[13], z_ref)  # the middle column
    torch.testing.assert_close(z[:9, 0], 0.3 + torch.linspace(-2.5, 2.5, 9))
    assert torch.equal(z[9:, :2], z_ref[:2].repeat(9, 1))
