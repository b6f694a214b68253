"""`write_report`: one self-contained HTML page with a run's figures, config, metrics, eval."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from vaelab import RunConfig, VaelabError, train
from vaelab.analysis.report import render_report
from vaelab.analysis.run_figures import FIGURES
from vaelab.cli.plot import write_report
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
    evaluation = {"test_elbo": -31.25, "samplers": {"prior": 0.125}, "note": "<b>bold</b>"}
    (run / "eval.json").write_text(json.dumps(evaluation))
    try:
        path = write_report(run)
    finally:
        (run / "eval.json").unlink()
    assert path == run / "report.html"
    page = path.read_text()
    pngs = [run / "plots" / f"{name}.png" for name in FIGURES]
    assert embedded_images(page) == [png.read_bytes() for png in pngs]
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<th>latent_dim</th><td class="num">5</td>' in page
    assert "<th>hidden_dims</th><td>[24]</td>" in page
    last = read_metrics(run)[-1]
    assert f"{last['val/loss']:.4g}" in page and "val/kl" in page
    assert "Evaluation (eval.json)" in page and "-31.25" in page and "0.125" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
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
        evaluation={"nested": {"deep": {"deeper": [1, {"k": "<v>"}]}}},
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>&lt;run&gt;</title>" in page and "a&amp;b" in page and "cap&lt;tion&gt;" in page
    assert "<td>[1, 2]</td>" in page and "nan" in page
    assert "&lt;v&gt;" in page and "<v>" not in page
    assert base64.b64encode(b"\x89PNG").decode() in page


def test_render_report_without_metrics_says_so() -> None:
    page = render_report(title="t", summary={}, figures=[], config={}, records=[])
    assert "No metrics were recorded" in page and "Evaluation" not in page
