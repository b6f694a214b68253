"""`vaelab plot` and `vaelab report` through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from test_cli import FAST, assert_one_line_error, run_cli

PLOTS = ("latent_map", "manifold", "samples", "reconstructions", "interpolations", "traversals",
         "curves")  # fmt: skip


@pytest.fixture(scope="module")
def run5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-D VAE on digits, two epochs."""
    from vaelab.cli import main

    run = tmp_path_factory.mktemp("plot") / "run"
    assert main(["-q", "train", "--latent-dim", "5", "--epochs", "2", "--hidden-dims", "32",
                 "--out", str(run), *FAST]) == 0  # fmt: skip
    return run


def test_plot_writes_every_figure_and_prints_the_paths(run5: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "plot", run5, "--out", tmp_path / "figs", "-q")
    assert code == 0
    printed = [Path(line) for line in out.splitlines()]
    assert sorted(p.stem for p in printed) == sorted(PLOTS)
    for path in printed:
        with Image.open(path) as image:
            assert image.size[0] > 200 and image.size[1] > 200


def test_report_is_one_self_contained_html_file(run5: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "report", run5, "--projection", "tsne", "--max-points", "200",
                           "-q")  # fmt: skip
    assert code == 0
    report = Path(out.splitlines()[-1])
    assert report == run5 / "report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "http://" not in html and "https://" not in html


def test_plot_of_a_missing_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "plot", tmp_path / "nothing")
    assert_one_line_error(code, err, "does not exist")
