"""`vaelab plot` and `vaelab report` through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from test_cli import FAST, assert_one_line_error, run_cli

PLOTS = (
    "latent_map",
    "manifold",
    "samples",
    "reconstructions",
    "interpolations",
    "traversals",
    "curves",
)


@pytest.fixture(scope="module")
def run5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-D VAE on digits, two epochs."""
    from vaelab.cli import main

    run = tmp_path_factory.mktemp("plot") / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "--latent-dim",
                "5",
                "--epochs",
                "2",
                "--hidden-dims",
                "32",
                "--out",
                str(run),
                *FAST,
            ]
        )
        == 0
    )
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
    code, out, _ = run_cli(
        capsys, "report", run5, "--projection", "tsne", "--max-points", "200", "-q"
    )
    assert code == 0
    report = Path(out.splitlines()[-1])
    assert report == run5 / "report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "http://" not in html and "https://" not in html


def test_plot_of_a_missing_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "plot", tmp_path / "nothing")
    assert_one_line_error(code, err, "does not exist")


def test_sample_from_a_mixture_fitted_to_the_codes(run5: Path, tmp_path: Path, capsys) -> None:
    outs = []
    for sampler in ("prior", "gmm"):
        out = tmp_path / f"{sampler}.png"
        code, _, _ = run_cli(
            capsys, "sample", run5, "--sampler", sampler, "--n", "16", "--out", out, "-q"
        )
        assert code == 0
        outs.append(out.read_bytes())
    assert outs[0] != outs[1]  # different codes, different pictures


def test_compare_writes_figure_json_and_table(
    run5: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from vaelab.cli import main

    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    ae = tmp_path / "ae"
    assert (
        main(
            [
                "-q",
                "train",
                "--model",
                "ae",
                "--latent-dim",
                "5",
                "--epochs",
                "2",
                "--hidden-dims",
                "32",
                "--out",
                str(ae),
                *FAST,
            ]
        )
        == 0
    )
    capsys.readouterr()
    code, out, _ = run_cli(
        capsys,
        "compare",
        run5,
        ae,
        "--out",
        tmp_path / "cmp",
        "--samples",
        "200",
        "--pairs",
        "10",
        "-q",
    )
    assert code == 0
    assert [Path(p).name for p in out.splitlines()] == [
        "comparison.png",
        "comparison.json",
        "comparison.md",
    ]
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "ae" in table and "vae" in table
