"""The explorer's controls, driven in headless Chromium: the keyboard and touch on the map, zoom
and pan, the decoded grid, the nearest test image, the sampling temperature and an
autoencoder's mixture sampler, the t-SNE view, uploads prepared as the data looks (polarity,
transparency, centring) and the sliders of an encoded input, linked runs at the same latent
point, and the view's state in the URL. Screenshots are checked: not blank, changed where
expected.

Skipped, visibly, where Debian's chromium or the Playwright package is missing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from tests.conftest import _tiny_run
from tests.test_explorer_browser import _canvas_url, _serving, _wait_change, launch

from vaelab import train

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
np = pytest.importorskip("numpy")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two 2-D VAEs of different seeds (one latent space) and a 5-D autoencoder."""
    root = tmp_path_factory.mktemp("runs")
    configs = {
        "vae": _tiny_run(epochs=3, model={"model": "vae", "latent_dim": 2}),
        "vae-b": _tiny_run(epochs=3, model={"latent_dim": 2}, train={"seed": 7}),
        "ae": _tiny_run(epochs=3, model={"model": "ae", "latent_dim": 5}),
    }
    for name, config in configs.items():
        train(config, root / name, progress=False)
    return {name: root / name for name in configs}


@pytest.fixture(scope="module")
def mixed(runs) -> Iterator[str]:
    """A 2-D VAE beside a 5-D autoencoder: latent spaces that differ."""
    with _serving({"vae": runs["vae"], "ae": runs["ae"]}) as url:
        yield url


@pytest.fixture(scope="module")
def twins(runs) -> Iterator[str]:
    """Two 2-D VAEs: one latent space."""
    with _serving({"vae": runs["vae"], "vae-b": runs["vae-b"]}) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


# The server computes the t-SNE map when first asked: seconds alone, a minute on a loaded 2-core
# machine (a CI run beside two trainings took more than 20 s).
TSNE_MS = 90_000


def _open(page, url: str):
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_load_state("networkidle")
    return page.locator(".panel").nth(0), page.locator(".panel").nth(1)


def _z(panel) -> list[float]:
    return [float(v) for v in panel.get_attribute("data-z").split(",")]


def _wait_z_change(panel, before: list[float]) -> list[float]:
    panel.page.wait_for_function(
        "([p, before]) => p.dataset.z !== before",
        arg=[panel.element_handle(), ",".join(map(repr, before))],
    )
    return _z(panel)


def _pixels(data_url: str) -> np.ndarray:
    import base64

    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float64)


def _screenshot(page, tmp_path: Path, name: str) -> np.ndarray:
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20, f"the {name} screenshot is nearly blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, f"{name}: few colours"
    return pixels


def _state(page) -> dict[str, str]:
    fragment = unquote(page.url.partition("#")[2])
    return dict(item.split("=", 1) for item in fragment.split("&") if "=" in item)


def test_keyboard_moves_pins_and_zooms_with_focus_shown(page, mixed: str, tmp_path) -> None:
    vae, _ = _open(page, mixed)
    the_map = vae.locator(".map")
    before_shot = _screenshot(page, tmp_path, "before")
    page.keyboard.press("Tab")  # keyboard focus reaches the map by Tab
    for _ in range(40):
        if page.evaluate("document.activeElement.classList.contains('map')"):
            break
        page.keyboard.press("Tab")
    assert the_map.evaluate("c => c === document.activeElement && c.matches(':focus-visible')")
    assert the_map.evaluate("c => getComputedStyle(c).outlineStyle") != "none"

    # Arrows move the point by a fiftieth of the view: right raises z1, up raises z2 (the 2-D
    # latent space is the map itself).
    z0, image0 = _z(vae), _canvas_url(vae, ".decoded")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    z1 = _wait_z_change(vae, z0)
    page.wait_for_function(
        "([p, n]) => p.dataset.z.split(',').map(Number)[0] > n",
        arg=[vae.element_handle(), z0[0] + 0.09 * _view_width(vae)],
    )
    z1 = _z(vae)
    assert z1[1] == pytest.approx(z0[1], abs=1e-6)
    assert _wait_change(vae, ".decoded", image0) != image0
    page.keyboard.press("Shift+ArrowUp")  # ten steps at once
    z2 = _wait_z_change(vae, z1)
    assert z2[1] - z1[1] == pytest.approx(0.2 * _view_height(vae), rel=1e-3)
    # The sliders and the readout catch up with the code once it rests (while it moves they
    # follow at most ten times a second).
    page.wait_for_function(
        """p => {
          const z = p.dataset.z.split(",").map(Number);
          const clamp = (s, v) => Math.min(Math.max(v, Number(s.min)), Number(s.max));
          return [...p.querySelectorAll(".sliders input")].every((s, i) =>
            Math.abs(Number(s.value) - clamp(s, z[i])) <= Number(s.step));
        }""",
        arg=vae.element_handle(),
    )
    assert f"{z2[0]:.2f}" in vae.locator(".readout").inner_text()

    # Enter pins the point (kept in the URL); + zooms in about it, 0 resets the view.
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.hash.includes('0.pin')")
    plain = _canvas_url(vae, ".map")
    page.keyboard.press("+")
    assert the_map.get_attribute("data-zoomed") == "true"
    assert _wait_change(vae, ".map", plain) != plain
    page.keyboard.press("0")
    assert the_map.get_attribute("data-zoomed") == "false"
    after = _screenshot(page, tmp_path, "after")
    assert after.shape != before_shot.shape or np.abs(after - before_shot.astype(int)).max() > 0


def _bounds(panel) -> dict[str, float]:
    return panel.page.evaluate(
        "(i) => { const p = window.vaelabPanels[i]; return p.bounds(); }",
        panel.evaluate("p => [...document.querySelectorAll('.panel')].indexOf(p)"),
    )


def _view_width(panel) -> float:
    b = _bounds(panel)
    return b["xmax"] - b["xmin"]


def _view_height(panel) -> float:
    b = _bounds(panel)
    return b["ymax"] - b["ymin"]


def test_touch_tap_pins_and_drag_pans_without_pinning(page, mixed: str) -> None:
    vae, _ = _open(page, mixed)
    the_map = vae.locator(".map")
    box = the_map.bounding_box()
    the_map.tap(position={"x": 0.3 * box["width"], "y": 0.6 * box["height"]})
    page.wait_for_function("() => location.hash.includes('0.pin')")
    pin = _state(page)["0.pin"]

    # A drag moves the view with the pointer and pins nothing.
    view = _bounds(vae)
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.5 * box["height"], steps=6)
    page.mouse.up()
    moved = _bounds(vae)
    assert moved["xmin"] < view["xmin"] and moved["xmax"] < view["xmax"]  # dragged right
    assert moved["xmax"] - moved["xmin"] == pytest.approx(view["xmax"] - view["xmin"])
    assert moved["ymin"] == pytest.approx(view["ymin"])
    page.wait_for_function("() => location.hash.includes('0.view')")  # once the view rests
    assert _state(page)["0.pin"] == pin
    # The wheel zooms in about the pointer.
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.wheel(0, -100)
    zoomed = _bounds(vae)
    assert zoomed["xmax"] - zoomed["xmin"] < 0.7 * (moved["xmax"] - moved["xmin"])


def test_decoded_grid_nearest_image_and_temperature(page, mixed: str, tmp_path) -> None:
    vae, ae = _open(page, mixed)
    the_map = vae.locator(".map")
    scatter = _canvas_url(vae, ".map")
    vae.locator(".grid-toggle").check()
    page.wait_for_function("c => c.dataset.grid === 'drawn'", arg=the_map.element_handle())
    tiled = _pixels(_canvas_url(vae, ".map"))
    assert _canvas_url(vae, ".map") != scatter
    # the map's plotted area is tiled with decoded digits: much of it dark (their background)
    inner = tiled[40:-40, 40:-40]
    assert (inner < 60).mean() > 0.3 and inner.std() > 40
    _screenshot(page, tmp_path, "grid")

    # Hovering shows the test image nearest to the point, with its label.
    box = the_map.bounding_box()
    page.mouse.move(box["x"] + 0.45 * box["width"], box["y"] + 0.55 * box["height"])
    page.wait_for_function(
        "p => p.querySelector('.nearest').dataset.index !== undefined",
        arg=vae.element_handle(),
    )
    index = int(vae.locator(".nearest").get_attribute("data-index"))
    # the caption follows with the readout, at most ten times a second
    page.wait_for_function(
        "([p, i]) => p.querySelector('.nearest-caption').textContent.includes(`#${i}:`)",
        arg=[vae.element_handle(), index],
    )
    caption = vae.locator(".nearest-caption").inner_text()
    assert caption.startswith(f"nearest test image #{index}: ")
    test = page.evaluate(f"fetch('/api/runs/vae/test_image/{index}').then(r => r.json())")
    assert caption.endswith(f": {test['label']}")
    assert _pixels(_canvas_url(vae, ".nearest")).std() > 10

    # The temperature narrows or widens the samples: at 0.1 the 16 samples are nearly alike.
    def spread() -> float:
        grid = _pixels(_canvas_url(vae, ".samples"))  # 4 x 4 cells of 42 pixels
        cells = grid.reshape(4, 42, 4, 42).transpose(0, 2, 1, 3).reshape(16, -1)
        return float(cells.std(axis=0).mean())

    wide = spread()
    samples = _canvas_url(vae, ".samples")
    vae.locator(".temperature").fill("0.1")
    _wait_change(vae, ".samples", samples)
    assert vae.locator(".temperature-value").inner_text() == "0.10"
    assert spread() < 0.5 * wide
    assert "T = 0.10" in vae.locator(".panel-status").inner_text()
    # The autoencoder samples from its mixture, and says so.
    assert "mixture of 10 Gaussians" in ae.locator(".sampler-note").inner_text()
    assert _pixels(_canvas_url(ae, ".samples")).std() > 10


def test_tsne_view_decodes_the_nearest_test_code(page, mixed: str) -> None:
    _, ae = _open(page, mixed)
    assert ae.locator(".layout-label").is_visible()
    plane = _canvas_url(ae, ".map")
    ae.locator(".layout").select_option("tsne")
    page.wait_for_function(
        "c => c.dataset.layout === 'tsne'",
        arg=ae.locator(".map").element_handle(),
        timeout=TSNE_MS,
    )
    assert _canvas_url(ae, ".map") != plane
    assert "t-SNE" in ae.locator(".projection").inner_text()
    assert ae.locator(".grid-toggle").is_disabled()
    box = ae.locator(".map").bounding_box()
    page.mouse.move(box["x"] + 0.35 * box["width"], box["y"] + 0.4 * box["height"])
    page.wait_for_function(
        "p => p.querySelector('.nearest').dataset.index !== undefined", arg=ae.element_handle()
    )
    index = int(ae.locator(".nearest").get_attribute("data-index"))
    test = page.evaluate(f"fetch('/api/runs/ae/test_image/{index}').then(r => r.json())")
    assert _z(ae) == pytest.approx(test["z"], abs=1e-5)  # the code of that test image


def _digit_png(*, dark_on_light: bool, transparent: bool, offset: tuple[int, int]) -> bytes:
    """A 200x200 thick bar (a "1") off the centre: dark ink on white paper, or ink on a transparent
    background."""
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    image = Image.new("RGBA", (200, 200), (paper, paper, paper, 0 if transparent else 255))
    pixels = image.load()
    x0, y0 = offset
    for y in range(y0, y0 + 80):
        for x in range(x0, x0 + 40):
            pixels[x, y] = (ink, ink, ink, 255)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(pixels.shape)
    mass = pixels.sum()
    return float((xs * pixels).sum() / mass), float((ys * pixels).sum() / mass)


@pytest.mark.parametrize(
    ("dark_on_light", "transparent"), [(True, False), (False, True)], ids=["paper", "transparent"]
)
def test_upload_is_shown_as_the_data_looks_and_its_sliders_edit_it(
    page, mixed: str, tmp_path: Path, dark_on_light: bool, transparent: bool
) -> None:
    vae, _ = _open(page, mixed)
    upload = tmp_path / "digit.png"
    upload.write_bytes(
        _digit_png(dark_on_light=dark_on_light, transparent=transparent, offset=(20, 10))
    )
    shown_before = _canvas_url(vae, ".input-shown")
    vae.locator(".upload").set_input_files(str(upload))
    shown = _pixels(_wait_change(vae, ".input-shown", shown_before))
    status = vae.locator(".panel-status")
    page.wait_for_function("s => s.textContent.includes('encoded')", arg=status.element_handle())
    # white ink on black, as the digits are, whatever the upload's polarity or transparency
    assert shown[:6].mean() < 30 and shown.max() > 200
    assert ("inverted" in status.inner_text()) == (dark_on_light and not transparent)
    # centred: the ink's centre of mass at the middle (the upload's is at its top left)
    cx, cy = _centre_of_mass(shown)
    assert abs(cx - shown.shape[1] / 2) < shown.shape[1] / 8
    assert abs(cy - shown.shape[0] / 2) < shown.shape[0] / 8
    # Unticking "centre" shows it where it was drawn: off to the top left.
    centred = _canvas_url(vae, ".input-shown")
    vae.locator(".centre").uncheck()
    off = _pixels(_wait_change(vae, ".input-shown", centred))
    ox, oy = _centre_of_mass(off)
    assert ox < cx - 10 and oy < cy - 10

    # The sliders now hold the input's code: moving one decodes an edit of it.
    encoded = {"z": [float(v) for v in vae.get_attribute("data-encoded").split(",")]}
    assert _z(vae) == pytest.approx(encoded["z"], abs=1e-6)
    decoded, recon = _canvas_url(vae, ".decoded"), _canvas_url(vae, ".recon")
    slider = vae.locator(".sliders input").nth(0)
    slider.fill(str(float(slider.get_attribute("max")) * 0.9))
    edited = _wait_z_change(vae, encoded["z"])
    assert edited[0] != pytest.approx(encoded["z"][0]) and edited[1] == pytest.approx(
        encoded["z"][1], abs=1e-6
    )
    assert _wait_change(vae, ".decoded", decoded) != decoded
    assert _canvas_url(vae, ".recon") == recon  # the reconstruction stays as encoded


@pytest.mark.parametrize("pair", ["twins", "mixed"])
def test_linked_runs_go_to_the_same_latent_point_where_they_share_a_space(
    page, pair: str, request
) -> None:
    first, second = _open(page, request.getfixturevalue(pair))
    note = page.locator("#link-note").inner_text()
    box = first.locator(".map").bounding_box()
    before = _z(second)
    page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.7 * box["height"])
    moved = _wait_z_change(second, before)
    if pair == "twins":  # two 2-D VAEs: one space
        assert "same latent point" in note
        assert moved == pytest.approx(_z(first), abs=1e-6)
    else:  # a 2-D VAE and a 5-D autoencoder: by place on each map, as the header says
        assert "differ" in note
        assert len(moved) == 5


def test_the_view_state_travels_in_the_url(page, browser, mixed: str, tmp_path) -> None:
    vae, ae = _open(page, mixed)
    vae.locator(".grid-toggle").check()
    vae.locator(".zoom-in").click()
    vae.locator(".temperature").fill("0.5")
    box = vae.locator(".map").bounding_box()
    page.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + 0.4 * box["height"])
    ae.locator(".layout").select_option("tsne")
    page.wait_for_function(
        "c => c.dataset.layout === 'tsne'",
        arg=ae.locator(".map").element_handle(),
        timeout=TSNE_MS,
    )
    page.wait_for_function(  # the URL is written once the view rests (no write pending)
        """keys => urlTimer === null
          && keys.every((k) => new URLSearchParams(location.hash.slice(1)).has(k))""",
        arg=["0.grid", "0.view", "0.pin", "0.t", "1.layout"],
    )
    shared = page.url
    z, view = _z(vae), _bounds(vae)
    shot = _screenshot(page, tmp_path, "shared")

    other = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    errors: list[str] = []
    other.on("pageerror", lambda e: errors.append(str(e)))
    try:
        other.goto(shared)
        other.wait_for_selector("body[data-ready='true']")
        vae2, ae2 = other.locator(".panel").nth(0), other.locator(".panel").nth(1)
        other.wait_for_function(
            "c => c.dataset.grid === 'drawn'", arg=vae2.locator(".map").element_handle()
        )
        assert _z(vae2) == pytest.approx(z, abs=1e-4)
        assert _bounds(vae2) == pytest.approx(view, rel=1e-4)
        assert vae2.locator(".temperature").input_value() == "0.5"
        assert ae2.locator(".map").get_attribute("data-layout") == "tsne"
        assert _screenshot(other, tmp_path, "opened").std() > 20
    finally:
        other.context.close()
    assert not errors, f"the shared page raised: {errors}"
    assert shot.std() > 20


def test_the_url_is_written_once_the_pointer_rests(page, mixed: str) -> None:
    vae, _ = _open(page, mixed)
    page.wait_for_timeout(400)  # what opening the page wrote
    page.evaluate(
        """() => {
          window.urlWrites = 0;
          const write = history.replaceState.bind(history);
          history.replaceState = (...args) => { window.urlWrites += 1; write(...args); };
        }"""
    )
    box = vae.locator(".map").bounding_box()
    for i in range(60):  # a second of pointer motion at a mouse's pace
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.01 * i), box["y"] + box["height"] / 2)
        page.wait_for_timeout(16)
    # none while it moved (one allowed: a loaded machine can pause between two moves)
    assert page.evaluate("window.urlWrites") <= 1
    page.wait_for_function(  # then the last point's, once it rests
        """p => {
          const z = new URLSearchParams(location.hash.slice(1)).get("0.z");
          const shown = p.dataset.z.split(",").map(Number);
          return z !== null && z.split(",").every((v, i) => Math.abs(v - shown[i]) < 1e-4);
        }""",
        arg=vae.element_handle(),
    )
