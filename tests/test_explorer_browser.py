"""End to end: the explorer page in headless Chromium over two tiny runs (a VAE and an AE), and
its "colour by" control over runs with and without known factors.

Skipped, visibly, where Debian's chromium or the Playwright package is missing."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from vaelab import train

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
    pytest.skip(f"chromium not installed at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
np = pytest.importorskip("numpy")

pytestmark = pytest.mark.slow
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(runs: dict[str, Path], app=None) -> Iterator[str]:
    """The explorer over `runs` (or `app`), served on a free loopback port while the block
    runs."""
    from vaelab.explorer.app import create_app

    port = _free_port()
    app = app or create_app(runs)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "the explorer server did not start in 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tiny_run, tmp_path: Path) -> Iterator[str]:
    """The explorer over a 2-D VAE and a 5-D AE."""
    root = tmp_path / "runs"
    runs = {"vae": root / "vae", "ae": root / "ae"}
    train(tiny_run(epochs=2, model={"model": "vae", "latent_dim": 2}), runs["vae"], progress=False)
    train(tiny_run(epochs=2, model={"model": "ae", "latent_dim": 5}), runs["ae"], progress=False)
    with _serving(runs) as url:
        yield url


def launch(playwright):
    """Debian's headless Chromium, as the brief asks it to be started."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


@pytest.fixture
def page() -> Iterator:
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def _canvas_url(panel, selector: str) -> str:
    return panel.locator(selector).evaluate("c => c.toDataURL()")


def _wait_change(panel, selector: str, before: str) -> str:
    """Wait until the canvas `selector` in `panel` shows something other than `before`."""
    panel.page.wait_for_function(
        "([c, before]) => c.toDataURL() !== before",
        arg=[panel.locator(selector).element_handle(), before],
    )
    return _canvas_url(panel, selector)


def _idle(page) -> None:
    page.wait_for_load_state("networkidle")


def test_explorer_page_end_to_end(page, server: str, tmp_path: Path) -> None:
    hosts: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: hosts.append(urlsplit(r.url).hostname or r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the server's Content-Security-Policy: anything it blocks is reported on the console
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )

    response = page.goto(server)
    assert (
        response is not None and "default-src 'self'" in response.headers["content-security-policy"]
    )
    page.wait_for_selector("body[data-ready='true']")
    panels = page.locator(".panel")
    assert panels.count() == 2
    vae, ae = panels.nth(0), panels.nth(1)
    assert "PCA" in ae.locator(".projection").inner_text()
    assert ae.locator(".sliders input").count() == 5
    _idle(page)

    # Moving on the first map decodes the point under the cursor, in both linked panels.
    box = vae.locator(".map").bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
    _idle(page)
    first, linked_first = _canvas_url(vae, ".decoded"), _canvas_url(ae, ".decoded")
    target = [box["x"] + 0.8 * box["width"], box["y"] + 0.7 * box["height"]]
    page.mouse.move(*target, steps=5)
    assert _wait_change(vae, ".decoded", first) != first
    assert _wait_change(ae, ".decoded", linked_first) != linked_first
    # The ring over the map (a layer of its own) is centred on the pointer.
    page.wait_for_function(
        """([ring, x, y]) => {
          const b = ring.getBoundingClientRect();
          return !ring.hidden && Math.hypot(b.x + b.width / 2 - x, b.y + b.height / 2 - y) < 1.5;
        }""",
        arg=[vae.locator(".cursor-mark").element_handle(), *target],
    )

    # Dragging the interpolation slider shows another frame.
    frame = _canvas_url(vae, ".frame")
    vae.locator(".frame-slider").scroll_into_view_if_needed()
    slider = vae.locator(".frame-slider").bounding_box()
    page.mouse.move(slider["x"] + 4, slider["y"] + slider["height"] / 2)
    page.mouse.down()
    page.mouse.move(slider["x"] + slider["width"] - 4, slider["y"] + slider["height"] / 2, steps=8)
    page.mouse.up()
    assert _wait_change(vae, ".frame", frame) != frame
    assert vae.locator(".frame-slider").input_value() != "0"

    # Sampling fills the grid; a drawn stroke is encoded, reconstructed and marked on the map.
    samples = _canvas_url(vae, ".samples")
    vae.locator(".sample").click()
    assert _wait_change(vae, ".samples", samples) != samples
    recon, blank = _canvas_url(vae, ".recon"), _canvas_url(vae, ".draw")
    vae.locator(".draw").scroll_into_view_if_needed()  # the mouse reaches only the viewport
    draw = vae.locator(".draw").bounding_box()
    page.mouse.move(draw["x"] + 0.5 * draw["width"], draw["y"] + 0.2 * draw["height"])
    page.mouse.down()
    page.mouse.move(draw["x"] + 0.5 * draw["width"], draw["y"] + 0.8 * draw["height"], steps=6)
    page.mouse.up()
    assert _canvas_url(vae, ".draw") != blank, "the stroke was not drawn"
    vae.locator(".encode").click()
    assert _wait_change(vae, ".recon", recon) != recon
    _idle(page)
    for panel in (vae, ae):
        assert "error" not in (panel.locator(".panel-status").get_attribute("class") or "")

    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert pixels.std() > 20, "the screenshot is nearly blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "the screenshot has few colours"

    assert not errors, f"the page raised: {errors}"
    assert set(hosts) <= LOOPBACK, f"requests left the machine: {sorted(set(hosts) - LOOPBACK)}"


@pytest.fixture
def factor_server(tiny_run, tmp_path: Path) -> Iterator[str]:
    """Two linked runs on `shapes` (known factors) and one on `digits` (none)."""
    shapes = {"dataset": "shapes", "image_size": 16}
    configs = {
        "shapes-vae": tiny_run(epochs=1, data=shapes),
        "shapes-ae": tiny_run(epochs=1, data=shapes, model={"model": "ae", "latent_dim": 3}),
        "digits": tiny_run(epochs=1),
    }
    runs = {name: tmp_path / name for name in configs}
    for name, config in configs.items():
        train(config, runs[name], progress=False)
    with _serving(runs) as url:
        yield url


def _colours(panel) -> list[str]:
    return panel.locator(".map").get_attribute("data-colours").split()


def test_colour_by_factor(page, factor_server: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(factor_server)
    page.wait_for_selector("body[data-ready='true']")
    vae, ae, digits = (page.locator(".panel").nth(k) for k in range(3))
    assert digits.locator(".colour-by-label").is_hidden()  # no factors: no control
    assert digits.locator(".colour-by option").count() == 0
    select = vae.locator(".colour-by")
    assert select.is_visible()
    options = select.locator("option").all_inner_texts()
    assert options == ["class", "shape", "scale", "orientation", "x", "y"]
    with urlopen(f"{factor_server}/api/runs/shapes-vae/map") as response:
        x_index = [row[3] for row in json.load(response)["factors"]]  # x is factor 3

    # x is ordered: a ramp from its smallest value (dark) to its largest (yellow), one colour
    # per value, with the legend giving the ends.
    by_class, pixels = _colours(vae), _canvas_url(vae, ".map")
    select.focus()
    page.keyboard.press("x")  # by keyboard: type-ahead picks the option "x"
    page.wait_for_function(
        "c => c.dataset.colourBy === 'x'", arg=vae.locator(".map").element_handle()
    )
    assert vae.locator(".map").get_attribute("data-colour-by") == "x"
    assert _canvas_url(vae, ".map") != pixels
    by_x = _colours(vae)
    assert by_x != by_class and len(by_x) == len(x_index)
    colour_of = {k: {c for c, i in zip(by_x, x_index, strict=True) if i == k} for k in range(8)}
    assert all(len(colours) == 1 for colours in colour_of.values())  # follows the factor
    assert colour_of[0] == {"#440154"} and colour_of[7] == {"#fde725"}
    assert len(set(by_x)) == 8
    ramp = vae.locator(".legend .ramp")
    assert ramp.get_attribute("aria-label") == "from 0 to 1"
    # The linked shapes run follows; the digits run has no such factor and keeps its classes.
    assert ae.locator(".map").get_attribute("data-colour-by") == "x"
    assert ae.locator(".colour-by").input_value() == "x"
    assert digits.locator(".map").get_attribute("data-colour-by") == "class"

    # shape is categorical: discrete colours, named by the class names (the shapes).
    select.select_option("shape")
    assert vae.locator(".legend li").all_inner_texts() == ["square", "ellipse", "heart"]
    assert _colours(vae) == by_class  # the shape is the class label here
    assert not errors, f"the page raised: {errors}"
