"""The explorer over conditional runs (issue 13): a label-conditional cvae and an m2 decode,
sample and interpolate with the picked class label, pixel for pixel as the model does; encode
returns the analogy row (the code decoded as every class) and an m2's prediction; bad labels are
a one-line 4xx; a completion model (cvae --observe) is described and refused, never a crash.
And the page, in headless Chromium: the class picker, by keyboard, changes the decoded image."""

from __future__ import annotations

import base64
import importlib
import io
import json
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab import RunConfig, train
from vaelab.figures import to_display
from vaelab.runs import open_run

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vaelab.explorer import create_app  # noqa: E402

K = 10  # digits' classes
Z = [[0.3, -0.7], [1.0, 0.5], [-1.2, 0.1]]  # codes to decode (latent size 2)


def _config(model: dict, data: dict | None = None) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"latent_dim": 2, "hidden_dims": [32], **model},
            "data": {"dataset": "digits", **(data or {})},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 2, "batch_size": 128, "device": "cpu"},
        }
    )


CONFIGS = {
    "cvae": lambda: _config({"model": "cvae"}),
    "cvae-prior": lambda: _config({"model": "cvae", "conditional_prior": True}),
    "m2": lambda: _config({"model": "m2"}, {"labelled": 50}),
    "completion": lambda: _config({"model": "cvae", "observe": "left"}),
    "vae": lambda: _config({"model": "vae"}),
}
CONDITIONAL = ("cvae", "cvae-prior", "m2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("conditional")
    folders = {name: root / name for name in CONFIGS}
    for name, config in CONFIGS.items():
        train(config(), folders[name], progress=False)
    return folders


@pytest.fixture(scope="module")
def client(runs: dict[str, Path]) -> TestClient:
    return TestClient(create_app(runs, max_batch=16), base_url="http://localhost")


@pytest.fixture(scope="module")
def opened(runs: dict[str, Path]):
    """Each run's best checkpoint, as the server loads it: `opened(name)` -> TrainedRun."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = open_run(runs[name], checkpoint="best")
        return cache[name]

    return get


def _png_pixels(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))))


def _pixels(images: torch.Tensor, value_range) -> list[np.ndarray]:
    """Images (B, 1, H, W) as the API's 8-bit pixels: value_range mapped to 0..255."""
    scaled = (to_display(images, value_range=value_range) * 255).round().to(torch.uint8)
    return [image[0].numpy() for image in scaled]


def _decoded(trained, z: list[list[float]], label: int | torch.Tensor) -> list[np.ndarray]:
    """model.decode(z, y) one code at a time, as the API's pixels."""
    model, out = trained.model, []
    for row, y in zip(z, torch.as_tensor(label).expand(len(z)), strict=True):
        with torch.no_grad():
            image = model.decode(torch.tensor([row], dtype=torch.float32), y.reshape(1))
        out += _pixels(image, trained.value_range)
    return out


def _same(urls: list[str], expected: list[np.ndarray]) -> None:
    assert len(urls) == len(expected)
    for k, (url, pixels) in enumerate(zip(urls, expected, strict=True)):
        got = _png_pixels(url)
        assert got.shape == pixels.shape == (8, 8)
        assert np.array_equal(got, pixels), f"image {k}: {np.abs(got - pixels.astype(int)).max()}"


def _refused(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def _drawing() -> str:
    """A white stroke on black, as the page's drawing canvas sends it (at the run's size)."""
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (3, 1, 5, 7))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _drawing_x() -> torch.Tensor:
    """_drawing() as the server reads it: (1, 1, 8, 8) in [0, 1] (the digits' data range)."""
    return torch.from_numpy(_png_pixels(_drawing()) / 255.0).float()[None, None]


# --- what /api/runs says ----------------------------------------------------------------------


def test_runs_say_which_are_conditional(client: TestClient) -> None:
    runs = {run["name"]: run for run in client.get("/api/runs").json()["runs"]}
    for name in CONDITIONAL:
        assert runs[name]["conditional"] and not runs[name]["completion"]
        assert runs[name]["labels"] == [str(k) for k in range(K)]  # digits' class names
        assert runs[name]["classifier"] == (name == "m2")
    completion = runs["completion"]
    assert completion["completion"] and not completion["conditional"]
    assert completion["observe"] == "top-left,bottom-left" and completion["labels"] is None
    vae = runs["vae"]
    assert not (vae["conditional"] or vae["completion"] or vae["classifier"])
    assert vae["labels"] is None and vae["observe"] is None


# --- decode, sample, interpolate with a label: the model's own images ---------------------------


@pytest.mark.parametrize("name", CONDITIONAL)
def test_decode_with_label_is_model_decode(client: TestClient, opened, name: str) -> None:
    result = client.post(f"/api/runs/{name}/decode", json={"z": Z, "label": 3}).json()
    assert np.allclose(result["z"], Z, atol=1e-6)  # as float32
    _same(result["images"], _decoded(opened(name), Z, 3))
    other = client.post(f"/api/runs/{name}/decode", json={"z": Z, "label": 8}).json()
    assert other["images"] != result["images"]  # the label reaches the decoder
    _same(other["images"], _decoded(opened(name), Z, 8))


def test_points_decode_with_the_label_too(client: TestClient, opened) -> None:
    result = client.post("/api/runs/cvae/decode", json={"points": [[0.2, -0.4]], "label": 5})
    result = result.json()
    _same(result["images"], _decoded(opened("cvae"), result["z"], 5))


@pytest.mark.parametrize("name", CONDITIONAL)
def test_samples_are_of_the_label(client: TestClient, opened, name: str) -> None:
    body = {"n": 6, "seed": 4, "label": 7}
    result = client.post(f"/api/runs/{name}/sample", json=body).json()
    trained = opened(name)
    _same(result["images"], _decoded(trained, result["z"], 7))
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # p(z|y) for the cvae with a learned prior, N(0, I) for the others
        z = trained.model.draw_codes(6, y=torch.full((6,), 7), generator=generator)
    assert np.allclose(result["z"], z.numpy(), atol=1e-6)
    assert client.post(f"/api/runs/{name}/sample", json=body).json() == result  # seeded


def test_interpolation_is_decoded_with_the_label(client: TestClient, opened) -> None:
    body = {"from_index": 0, "to_index": 4, "steps": 5, "label": 2}
    result = client.post("/api/runs/m2/interpolate", json=body).json()
    _same(result["images"], _decoded(opened("m2"), result["z"], 2))


def test_map_codes_are_encoded_with_each_images_own_label(client: TestClient, opened) -> None:
    trained = opened("cvae")
    test = trained.choose_split()
    index = 7
    shown = client.get(f"/api/runs/cvae/test_image/{index}").json()
    assert shown["label"] == int(test.y[index])
    with torch.no_grad():
        own = trained.model.encode(test.x[index : index + 1], test.y[index : index + 1]).mean
        wrong = trained.model.encode(test.x[index : index + 1], (test.y[index : index + 1] + 1) % K)
    assert np.allclose(shown["z"], own[0].numpy(), atol=1e-6)
    assert not np.allclose(shown["z"], wrong.mean[0].numpy(), atol=1e-4)
    mapped = client.get("/api/runs/cvae/map").json()
    assert mapped["labels"] == test.y[mapped["indices"]].tolist()  # coloured by class


# --- encode: the analogy row and the classifier ------------------------------------------------


def test_cvae_encode_gives_the_analogy_row(client: TestClient, opened) -> None:
    result = client.post("/api/runs/cvae/encode", json={"image": _drawing(), "label": 3}).json()
    trained = opened("cvae")
    with torch.no_grad():
        mu = trained.model.encode(_drawing_x(), torch.tensor([3])).mean  # encoded with label 3
    assert result["label"] == 3 and result["prediction"] is None
    assert np.allclose(result["z"], mu[0].numpy(), atol=1e-5)
    assert len(result["analogies"]) == K
    _same(result["analogies"], [_decoded(trained, [result["z"]], j)[0] for j in range(K)])
    assert result["reconstruction"] == result["analogies"][3]
    assert len(set(result["analogies"])) > 1  # each class draws it differently


def test_m2_encode_infers_the_label_with_its_classifier(client: TestClient, opened) -> None:
    result = client.post("/api/runs/m2/encode", json={"image": _drawing()}).json()
    model = opened("m2").model
    with torch.no_grad():
        probabilities = model.predict_proba(_drawing_x())[0]
        mu = model.encode(_drawing_x()).mean  # y=None: the classifier's most probable class
    predicted = int(probabilities.argmax())
    prediction = result["prediction"]
    assert prediction["label"] == predicted == result["label"]
    assert prediction["probability"] == pytest.approx(float(probabilities[predicted]), abs=1e-6)
    assert np.allclose(prediction["probabilities"], probabilities.numpy(), atol=1e-6)
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(result["z"], mu[0].numpy(), atol=1e-5)
    assert len(result["analogies"]) == K
    _same(result["analogies"], [_decoded(opened("m2"), [result["z"]], j)[0] for j in range(K)])
    assert result["reconstruction"] == result["analogies"][predicted]

    given_label = (predicted + 1) % K  # a label given wins over the classifier's
    chosen = client.post("/api/runs/m2/encode", json={"image": _drawing(), "label": given_label})
    chosen = chosen.json()
    with torch.no_grad():
        mu = model.encode(_drawing_x(), torch.tensor([given_label])).mean
    assert chosen["label"] == given_label and chosen["prediction"] == prediction
    assert np.allclose(chosen["z"], mu[0].numpy(), atol=1e-5)


def test_unconditional_encode_has_no_row(client: TestClient) -> None:
    result = client.post("/api/runs/vae/encode", json={"image": _drawing()}).json()
    assert result["label"] is None and result["analogies"] is None
    assert result["prediction"] is None and len(result["z"]) == 2


# --- bad labels, unconditional and completion runs ----------------------------------------------

BAD_LABELS = [
    ("cvae", "decode", {"z": Z}, "give 'label', 0 to 9"),
    ("cvae", "decode", {"z": Z, "label": 10}, "label 10 is out of range: run 'cvae' has classes 0"),
    ("m2", "decode", {"z": Z, "label": 10**30}, "out of range"),
    ("cvae", "decode", {"z": Z, "label": -1}, "greater than or equal to 0"),
    ("cvae", "decode", {"z": Z, "label": 2.5}, "valid integer"),
    ("cvae", "decode", {"z": Z, "label": "3"}, "valid integer"),
    ("cvae", "decode", {"z": Z, "label": True}, "valid integer"),
    ("m2", "sample", {"n": 2}, "give 'label'"),
    ("m2", "sample", {"n": 2, "label": 11}, "out of range"),
    ("cvae-prior", "interpolate", {"from_index": 0, "to_index": 1}, "give 'label'"),
    ("cvae", "interpolate", {"from_index": 0, "to_index": 1, "label": 99}, "out of range"),
    ("cvae", "encode", {"image": _drawing()}, "give 'label'"),
    ("m2", "encode", {"image": _drawing(), "label": 10}, "out of range"),
    ("vae", "decode", {"z": Z, "label": 3}, "not conditional on a class label"),
    ("vae", "sample", {"label": 0}, "leave out 'label'"),
    ("vae", "encode", {"image": _drawing(), "label": 0}, "not conditional"),
]


@pytest.mark.parametrize(("name", "endpoint", "body", "message"), BAD_LABELS)
def test_bad_labels_are_422(
    client: TestClient, name: str, endpoint: str, body: dict, message: str
) -> None:
    assert message in _refused(client.post(f"/api/runs/{name}/{endpoint}", json=body), 422)


def test_unconditional_runs_work_without_a_label(client: TestClient) -> None:
    for endpoint, body in [
        ("decode", {"z": Z}),
        ("sample", {"n": 2}),
        ("interpolate", {"from_index": 0, "to_index": 1}),
    ]:
        assert client.post(f"/api/runs/vae/{endpoint}", json=body).status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("decode", {"z": Z}),
        ("decode", {"points": [[0.0, 0.0]]}),
        ("sample", {"n": 2}),
        ("interpolate", {"from_index": 0, "to_index": 1}),
        ("encode", {"image": _drawing()}),
    ],
)
def test_completion_model_is_refused_with_a_pointer(
    client: TestClient, endpoint: str, body: dict
) -> None:
    detail = _refused(client.post(f"/api/runs/completion/{endpoint}", json=body), 400)
    assert "completion model" in detail and "vaelab complete" in detail


def test_completion_model_still_has_its_map(client: TestClient) -> None:
    mapped = client.get("/api/runs/completion/map").json()
    assert len(mapped["points"]) == len(mapped["labels"]) > 0
    assert client.get("/api/runs/completion/test_image/0").status_code == 200


labels = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=5)
)
json_junk = st.recursive(labels, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from([*CONDITIONAL, "completion", "vae"]),
    endpoint=st.sampled_from(["decode", "sample", "interpolate", "encode"]),
    label=labels | json_junk,
    with_label=st.booleans(),
)
def test_labels_never_5xx(
    client: TestClient, name: str, endpoint: str, label: object, with_label: bool
) -> None:
    body = {
        "decode": {"z": [[0.1, 0.2]]},
        "sample": {"n": 2},
        "interpolate": {"from_index": 0, "to_index": 1, "steps": 3},
        "encode": {"image": _drawing()},
    }[endpoint]
    if with_label:
        body = {**body, "label": label}
    response = client.post(
        f"/api/runs/{name}/{endpoint}",
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (200, 400, 422), response.text
    given = with_label and label is not None  # null is no label
    well_formed = not given or (type(label) is int and label >= 0)  # a whole number, not a bool
    if not well_formed:
        expected = 422
    elif name == "completion":  # refused whatever the label
        expected = 400
    elif name == "vae":
        expected = 422 if given else 200
    elif name == "m2" and endpoint == "encode":  # the classifier infers a missing label
        expected = 200 if not given or label < K else 422
    else:
        expected = 200 if given and label < K else 422
    assert response.status_code == expected, (body, response.text)


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture
def browser_kit():
    """tests/test_explorer_browser.py's helpers; skipped as it is without chromium or
    playwright."""
    return importlib.import_module("test_explorer_browser")


@pytest.mark.slow
def test_class_picker_in_the_page(browser_kit, runs: dict[str, Path], tmp_path: Path) -> None:
    kit = browser_kit
    served = {name: runs[name] for name in ("cvae", "m2", "completion")}
    errors: list[str] = []
    with kit._serving(served) as url, kit.sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(kit.CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            _use_the_picker(kit, page, url, tmp_path)
        finally:
            browser.close()
    assert not errors, f"the page raised: {errors}"


def _use_the_picker(kit, page, url: str, tmp_path: Path) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    cvae, m2, completion = (page.locator(".panel").nth(k) for k in range(3))
    kit._idle(page)

    # The completion model: a note pointing to `vaelab complete`, and no map or decoder.
    assert "vaelab complete" in completion.locator(".unavailable").inner_text()
    assert completion.locator(".cards").is_hidden()

    # The picker lists the classes and starts at test image 0's class.
    select = cvae.locator(".label-pick")
    assert select.is_visible() and select.locator("option").all_inner_texts() == [
        str(k) for k in range(K)
    ]
    with urlopen(f"{url}/api/runs/cvae/test_image/0") as response:
        first = json.load(response)["label"]
    assert select.input_value() == str(first)

    # It is reached with Tab and changed with the arrow keys; the decoded image follows.
    for _ in range(20):
        if select.evaluate("s => s === document.activeElement"):
            break
        page.keyboard.press("Tab")
    assert select.evaluate("s => s === document.activeElement"), "Tab never reached the picker"
    decoded, samples = kit._canvas_url(cvae, ".decoded"), kit._canvas_url(cvae, ".samples")
    before = np.asarray(Image.open(io.BytesIO(cvae.locator(".decoded").screenshot())))
    page.keyboard.press("ArrowUp" if first == K - 1 else "ArrowDown")
    picked = first - 1 if first == K - 1 else first + 1
    assert select.input_value() == str(picked)
    kit._wait_change(cvae, ".decoded", decoded)
    kit._wait_change(cvae, ".samples", samples)
    kit._idle(page)
    after = np.asarray(Image.open(io.BytesIO(cvae.locator(".decoded").screenshot())))
    assert before.shape == after.shape and not np.array_equal(before, after)
    assert m2.locator(".label-pick").input_value() == str(picked)  # linked: the m2 follows

    # A drawn digit: the cvae's analogy row (every class), the m2's classifier's guess.
    cvae.locator(".draw").scroll_into_view_if_needed()
    box = cvae.locator(".draw").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.8 * box["height"], steps=6)
    page.mouse.up()  # the end of a stroke encodes it, in both linked panels
    page.wait_for_function(
        "p => !p.querySelector('.analogy-box').hidden", arg=cvae.element_handle()
    )
    page.wait_for_function("p => !p.querySelector('.prediction').hidden", arg=m2.element_handle())
    kit._idle(page)
    row = cvae.locator(".analogies")
    assert row.evaluate("c => c.width") == K * 24
    assert cvae.locator(".analogy-names li").all_inner_texts() == [str(k) for k in range(K)]
    shot = np.asarray(Image.open(io.BytesIO(row.screenshot())).convert("L"))
    assert shot.std() > 5, "the analogy row is blank"
    assert f"as class {picked}" in cvae.locator(".panel-status").inner_text()
    prediction = m2.locator(".prediction").inner_text()
    assert prediction.startswith("classifier: ") and prediction.endswith("%)")
    for panel in (cvae, m2):
        assert "error" not in (panel.locator(".panel-status").get_attribute("class") or "")
    page.screenshot(path=str(tmp_path / "conditional.png"), full_page=True)
