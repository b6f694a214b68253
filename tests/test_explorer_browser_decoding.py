"""The explorer page decoding in the browser (onnxruntime-web over the run's ONNX decoder), in
headless Chromium: hover, sliders, interpolation and sampling make no request, and the pixels
equal the server's.

Skipped, visibly, where Chromium or Playwright is missing (see test_explorer_browser), or where
npm is missing so that `make web` could not vendor onnxruntime-web."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

import pytest
from tests.test_explorer_browser import _serving, page  # noqa: F401  (the page fixture)

from vaelab import train
from vaelab.explorer.browser_decoder import VENDOR, runtime_installed

Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

if not runtime_installed():
    if shutil.which("npm") is not None:  # make install vendors it where npm is: a real failure
        pytest.fail(f"onnxruntime-web is missing from {VENDOR}: run make web", pytrace=False)
    pytest.skip("npm is not installed, so onnxruntime-web is not vendored", allow_module_level=True)

pytestmark = pytest.mark.slow
DECODING_ENDPOINTS = ("/decode", "/sample", "/interpolate")


@pytest.fixture
def server(tiny_run, tmp_path: Path) -> Iterator[str]:
    """The explorer over a 2-D VAE (N(0, I) prior) and a 5-D AE (no prior)."""
    runs = {"vae": tmp_path / "vae", "ae": tmp_path / "ae"}
    train(tiny_run(epochs=2, model={"model": "vae", "latent_dim": 2}), runs["vae"], progress=False)
    train(tiny_run(epochs=2, model={"model": "ae", "latent_dim": 5}), runs["ae"], progress=False)
    with _serving(runs) as url:
        yield url


def _server_pixels(url: str, run: str, z: list[float]) -> np.ndarray:
    body = json.dumps({"z": [z]}).encode()
    request = Request(
        f"{url}/api/runs/{run}/decode", data=body, headers={"content-type": "application/json"}
    )
    with urlopen(request) as response:
        png = json.load(response)["images"][0].split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L"), dtype=int)


BROWSER_PIXELS = """async ([k, z]) => {
  const [canvas] = await panels[k].decoder.decode([z]);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  return Array.from(data).filter((_, i) => i % 4 === 0);  // the red channel: grey images
}"""


def test_the_page_decodes_in_the_browser_without_requests(page, server: str) -> None:  # noqa: F811
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on(  # any failed response but the favicon, which the page does not have
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.goto(server)
    page.wait_for_selector("body[data-ready='true']")
    vae, ae = page.locator(".panel").nth(0), page.locator(".panel").nth(1)
    assert vae.get_attribute("data-decoding") == "browser"
    assert ae.get_attribute("data-decoding") == "browser"
    assert "decoded in the browser" in vae.locator(".run-info").inner_text()
    assert any("/static/vendor/onnxruntime-web/" in url for url in requests)
    assert any(url.endswith("/decoder.onnx") for url in requests)

    # the same pixels as the server's decoder, for codes anywhere
    for k, (run, z) in enumerate([("vae", [0.3, -1.2]), ("ae", [1.0, -2.0, 0.5, 3.0, -0.7])]):
        here = np.array(page.evaluate(BROWSER_PIXELS, [k, z])).reshape(8, 8)
        assert np.abs(here - _server_pixels(server, run, z)).max() <= 1

    requests.clear()
    before = vae.locator(".decoded").evaluate("c => c.toDataURL()")
    box = vae.locator(".map").bounding_box()
    assert box is not None
    for fx, fy in [(0.2, 0.3), (0.5, 0.5), (0.8, 0.7), (0.35, 0.9)]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_function("() => window.vaelabLatencies.length >= 4")
    page.wait_for_function(
        "([c, before]) => c.toDataURL() !== before",
        arg=[vae.locator(".decoded").element_handle(), before],
    )
    latencies = page.evaluate("() => window.vaelabLatencies")
    assert {entry["run"] for entry in latencies} == {"vae", "ae"}  # linked: both panels moved
    assert all(0 <= entry["ms"] < 5000 for entry in latencies)

    slider = ae.locator(".sliders input").first  # a slider decodes its new code
    shown = ae.locator(".decoded").evaluate("c => c.toDataURL()")
    slider.focus()
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([c, before]) => c.toDataURL() !== before",
        arg=[ae.locator(".decoded").element_handle(), shown],
    )

    samples = vae.locator(".samples").evaluate("c => c.toDataURL()")
    vae.locator(".sample").click()
    page.wait_for_function(
        "([c, before]) => c.toDataURL() !== before",
        arg=[vae.locator(".samples").element_handle(), samples],
    )

    # another pair of test images, then the same pair along the great circle
    path = page.evaluate("() => JSON.stringify(panels[0].path.points)")
    vae.locator(".to").fill("5")
    vae.locator(".to").dispatch_event("change")
    changed = "before => JSON.stringify(panels[0].path.points) !== before"
    page.wait_for_function(changed, arg=path)
    path = page.evaluate("() => JSON.stringify(panels[0].path.points)")
    vae.locator(".spherical").check()
    page.wait_for_function(changed, arg=path)
    assert page.evaluate("() => panels[0].path.images.length") == 16

    decoding = [url for url in requests if url.endswith(DECODING_ENDPOINTS)]
    assert not decoding, f"decoding went to the server: {decoding}"
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def server_decoding(tiny_run, tmp_path: Path) -> Iterator[str]:
    from vaelab.explorer.app import create_app

    run = tmp_path / "vae"
    train(tiny_run(epochs=1, model={"model": "vae", "latent_dim": 2}), run, progress=False)
    with _serving({"vae": run}, app=create_app({"vae": run}, browser_decoding=False)) as url:
        yield url


def test_with_server_decoding_the_page_asks_the_server(page, server_decoding) -> None:  # noqa: F811
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server_decoding)
    page.wait_for_selector("body[data-ready='true']")
    panel = page.locator(".panel").first
    assert panel.get_attribute("data-decoding") == "server"
    assert "--server-decoding" in panel.locator(".run-info").get_attribute("title")
    assert any(url.endswith("/decode") for url in requests)
    assert not any("onnxruntime-web" in url for url in requests)
