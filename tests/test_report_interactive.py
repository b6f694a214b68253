"""`vaelab report --interactive`: the explorer's live latent map inside the report, opened from
a file in headless Chromium with every network request refused: it decodes in the page
(onnxruntime-web and the decoder travel inline), its map, sliders, zoom, grid, samples and t-SNE
view work, and what needs the server is left out. A run whose decoder cannot run in the browser
is a one-line error.

Skipped, visibly, where Debian's chromium, Playwright or the vendored runtime is missing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.test_explorer_browser import CHROMIUM, page  # noqa: F401  (the page fixture)

from test_cli import FAST, assert_one_line_error, run_cli
from vaelab.explorer.browser_decoder import runtime_installed

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
np = pytest.importorskip("numpy")
if not CHROMIUM.exists():
    pytest.skip(f"chromium not installed at {CHROMIUM}", allow_module_level=True)
if not runtime_installed():
    pytest.skip("onnxruntime-web is not vendored (make web)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _train(capsys, run: Path, *options: str) -> Path:
    code, _, err = run_cli(
        capsys, "train", "--dataset", "digits", "--epochs", "3", "--hidden-dims", "32",
        *options, *FAST, "--out", run,
    )  # fmt: skip
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Interactive reports of a 2-D VAE (in a folder whose name has a space and an =) and a
    4-D autoencoder."""
    from vaelab.cli import main

    root = tmp_path_factory.mktemp("reports")
    made = {}
    for name, options in {
        "vae beta=1": ("--latent-dim", "2"),  # a name the page's paths must encode
        "ae": ("--model", "ae", "--latent-dim", "4"),
    }.items():
        run = root / name
        assert main(["-q", "train", "--dataset", "digits", "--epochs", "3", "--hidden-dims",
                     "32", *options, *FAST, "--out", str(run)]) == 0  # fmt: skip
        assert main(["-q", "report", str(run), "--interactive"]) == 0
        made[name] = run / "report.html"
    return made


def _open(page, report: Path) -> tuple[object, list[str], list[str]]:  # noqa: F811
    """The live map's frame, the URLs the page asked for and its errors."""
    page.set_default_timeout(30_000)  # the report is some MB, its runtime unpacked in the page
    asked: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # nothing may come from a server: every http(s) request is refused
    page.route("http*://**", lambda route: route.abort())
    page.goto(report.as_uri())
    frame = page.frame_locator("iframe.live")
    frame.locator("body[data-ready='true']").wait_for()
    return frame, asked, errors


def _canvas(locator) -> np.ndarray:
    import base64

    url = locator.evaluate("c => c.toDataURL()")
    raw = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float64)


def test_the_live_map_decodes_in_a_report_opened_from_a_file(page, reports) -> None:  # noqa: F811
    frame, asked, errors = _open(page, reports["vae beta=1"])
    panel = frame.locator(".panel").first
    assert panel.get_attribute("data-decoding") == "browser"
    assert frame.locator("#link-label").is_hidden()  # one run: nothing to link
    assert frame.locator(".own-card").is_hidden()  # encoding needs the server
    samples = _canvas(panel.locator(".samples"))
    assert samples.std() > 5, "no samples were drawn"

    # Moving over the map decodes there; the sliders follow.
    panel.locator(".map").scroll_into_view_if_needed()  # the mouse reaches only the viewport
    box = panel.locator(".map").bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
    page.wait_for_timeout(300)
    first_z, first = panel.get_attribute("data-z"), _canvas(panel.locator(".decoded"))
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.7 * box["height"], steps=4)
    page.wait_for_timeout(300)
    second_z, second = panel.get_attribute("data-z"), _canvas(panel.locator(".decoded"))
    assert first_z != second_z and np.abs(first - second).max() > 0
    z = [float(v) for v in second_z.split(",")]
    value = panel.locator(".sliders output").first.inner_text()
    assert value == f"{z[0]:.2f}"
    # ... and the decoded grid and the nearest test image come from the page's own data.
    panel.locator(".grid-toggle").check()
    panel.locator(".map[data-grid='drawn']").wait_for()
    assert panel.locator(".nearest-caption").inner_text().startswith("nearest test image #")
    page.screenshot(path=str(reports["vae beta=1"].parent / "live.png"), full_page=True)
    shot = np.asarray(Image.open(reports["vae beta=1"].parent / "live.png").convert("RGB"))
    assert shot.std() > 20

    assert not errors, f"the page raised: {errors}"
    assert all(url.startswith(("file:", "blob:", "data:")) for url in asked), asked


def test_the_live_map_of_more_dimensions_has_its_tsne_view_offline(page, reports) -> None:  # noqa: F811
    frame, asked, errors = _open(page, reports["ae"])
    panel = frame.locator(".panel").first
    assert "mixture of 10 Gaussians" in panel.locator(".sampler-note").inner_text()
    panel.locator(".layout").select_option("tsne")
    panel.locator(".map[data-layout='tsne']").wait_for()
    panel.locator(".map").scroll_into_view_if_needed()
    box = panel.locator(".map").bounding_box()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.4 * box["height"])
    panel.locator(".nearest[data-index]").wait_for()
    assert len(panel.get_attribute("data-z").split(",")) == 4
    assert not errors, f"the page raised: {errors}"
    assert all(url.startswith(("file:", "blob:", "data:")) for url in asked), asked


def test_interactive_needs_a_decoder_for_the_browser(tmp_path: Path, capsys) -> None:
    run = _train(capsys, tmp_path / "ar", "--latent-dim", "2", "--autoregressive", "local")
    code, _, err = run_cli(capsys, "report", run, "--interactive", "-q")
    assert_one_line_error(code, err, "needs a decoder that runs in the browser")
    assert not (run / "report.html").exists()
