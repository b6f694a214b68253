"""`write_report`: one self-contained HTML page with a run's figures, config, metrics, eval."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest

from vaelab import RunConfig, VaelabError, train
from vaelab.analysis.report import EvalSection, figure_captions, render_report
from vaelab.analysis.run_figures import FIGURES, draw_figures
from vaelab.cli.evaluate import evaluate_run, format_result
from vaelab.cli.plot import write_report
from vaelab.runs import load_run
from vaelab.training.metrics import read_metrics


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A trained tiny VAE with a 5-D latent space on digits."""
    config = RunConfig.from_dict(
        {
            "model": {"latent_dim": 5, "hidden_dims": [24]},
            "data": {"dataset": "digits"},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 2, "batch_size": 128, "device": "cpu"},
        }
    )
    return train(config, tmp_path_factory.mktemp("report") / "vae5", progress=False).run_dir


def embedded_images(page: str) -> list[bytes]:
    return [
        base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    ]


def test_report_embeds_figures_config_metrics_and_eval(run: Path) -> None:
    result, record, eval_path = evaluate_run(run, k=4, chunk=4096, device="cpu")
    try:
        path = write_report(run)
    finally:
        eval_path.unlink()
    assert path == run / "report.html"
    page = path.read_text()
    pngs = [run / "plots" / f"{name}.png" for name in FIGURES]
    assert embedded_images(page) == [png.read_bytes() for png in pngs]
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<th>latent_dim</th><td class="num">5</td>' in page
    assert "<th>hidden_dims</th><td>[24]</td>" in page
    last = read_metrics(run)[-1]
    assert f"{last['val/loss']:.4g}" in page and "val/kl" in page
    # The table `vaelab eval` printed, not a dump of the JSON; KL per dimension in order.
    table = html.escape(format_result(result, record, run), quote=True)
    assert "Evaluation (eval.json)" in page and f"<pre>{table}</pre>" in page
    assert "<th>z<sub>5</sub></th>" in page and '"kl_per_dim"' not in page
    cells = re.findall(r'<td class="num">([^<]+)</td>', page.split("in dimension order")[1])
    assert cells[:5] == [f"{v:.4g}" for v in result.kl_per_dim]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files


def test_report_without_eval_json_leaves_the_section_out(run: Path, tmp_path: Path) -> None:
    path = write_report(run, tmp_path, projection="tsne", max_points=60)
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert "Evaluation" not in page
    assert len(embedded_images(page)) == len(FIGURES)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"{name}.png" for name in FIGURES
    )


def test_report_notes_an_unreadable_eval_json(run: Path, tmp_path: Path) -> None:
    (run / "eval.json").write_text("{not json")
    try:
        page = write_report(run, tmp_path / "r.html").read_text()
    finally:
        (run / "eval.json").unlink()
    assert "could not be read" in page


def test_report_rejects_bad_paths_and_options(run: Path, tmp_path: Path) -> None:
    with pytest.raises(VaelabError, match="must be an .html file"):
        write_report(run, tmp_path / "report.txt")
    with pytest.raises(VaelabError, match="does not exist"):
        write_report(run, tmp_path / "nowhere" / "report.html")
    with pytest.raises(VaelabError, match="unknown projection"):
        write_report(run, projection="umap")
    with pytest.raises(VaelabError, match="does not exist"):
        write_report(tmp_path / "missing")


def test_render_report_escapes_every_text() -> None:
    page = render_report(
        title="<run>",
        summary={"a&b": "<i>"},
        figures=[("x<y", "cap<tion>", b"\x89PNG")],
        config={"model": {"name": "<script>alert(1)</script>", "dims": [1, 2]}},
        records=[{"epoch": 1, "train/loss": 2.5}, {"epoch": 2, "val/loss": float("nan")}],
        evaluation=[EvalSection("best/<test>", "a <v> table", [0.5, 1.25])],
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>&lt;run&gt;</title>" in page and "a&amp;b" in page and "cap&lt;tion&gt;" in page
    assert "<td>[1, 2]</td>" in page and "nan" in page
    assert "&lt;v&gt;" in page and "<v>" not in page and "best/&lt;test&gt;" in page
    assert base64.b64encode(b"\x89PNG").decode() in page


def test_render_report_without_metrics_says_so() -> None:
    page = render_report(title="t", summary={}, figures=[], config={}, records=[])
    assert "No metrics were recorded" in page and "Evaluation" not in page


def test_report_says_what_each_figure_was_drawn_from(run: Path, tmp_path: Path) -> None:
    page = write_report(run, tmp_path, max_points=60).read_text()
    n = len(load_run(run).x)
    assert f"<th>latent map</th><td>60 of {n:,} test images" in page
    assert f"<th>reconstructions</th><td>20 of {n:,} test images, spread evenly" in page
    title = draw_figures(load_run(run), max_points=60)["latent_map"].axes[0].get_title()
    assert title.startswith(f"Latent map: posterior means μ of 60 of {n:,} test images")
    # The manifold's caption names the grid a 5-D run gets; nothing calls it regular.
    assert "regular grid" not in page and "first two principal axes" in page


def test_manifold_captions_name_the_grid_of_each_kind_of_model() -> None:
    assert "Φ⁻¹(p)" in figure_captions(latent_dim=2, has_prior=True)["manifold"]
    assert "own marginals" in figure_captions(latent_dim=2, has_prior=False)["manifold"]
    assert "principal axes" in figure_captions(latent_dim=5, has_prior=False)["manifold"]


def test_report_shows_a_foreign_eval_record_as_such(run: Path, tmp_path: Path) -> None:
    (run / "eval.json").write_text(json.dumps({"mine": {"note": "<b>bold</b>"}}))
    try:
        page = write_report(run, tmp_path / "r.html").read_text()
    finally:
        (run / "eval.json").unlink()
    assert "not a record `vaelab eval` wrote" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
