"""The explorer's JSON API on two tiny runs trained here: every endpoint's happy path, every
kind of bad input (a 4xx with a one-line message, never a 500), and serving on afterwards."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab import RunConfig, train

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vaelab.explorer import create_app  # noqa: E402

MAX_BYTES = 20_000
MAX_BATCH = 8


def _train(folder: Path, model: str, latent_dim: int) -> Path:
    config = RunConfig.from_dict(
        {
            "model": {"model": model, "latent_dim": latent_dim, "hidden_dims": [32]},
            "data": {"dataset": "digits"},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        }
    )
    train(config, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("explorer")
    return [_train(root / "vae", "vae", 2), _train(root / "ae", "ae", 5)]


@pytest.fixture(scope="module")
def client(runs: list[Path]) -> TestClient:
    app = create_app(runs, max_request_bytes=MAX_BYTES, max_batch=MAX_BATCH)
    return TestClient(app, base_url="http://localhost")


def _png(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def _data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _refused(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


# --- happy paths ----------------------------------------------------------------------------


def test_runs_lists_both_in_order(client: TestClient) -> None:
    runs = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["vae", "ae"]
    vae, ae = runs
    assert (vae["model"], vae["latent_dim"], vae["has_prior"]) == ("vae", 2, True)
    assert (ae["model"], ae["latent_dim"], ae["has_prior"]) == ("ae", 5, False)
    assert (vae["channels"], vae["height"], vae["width"]) == (1, 8, 8)
    assert vae["class_names"] is None or len(vae["class_names"]) == 10


def test_equal_folder_names_get_suffixes(client: TestClient, tmp_path: Path) -> None:
    from vaelab.explorer.runs import run_names

    assert run_names([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "run"]) == [
        "run",
        "run-2",
        "run-3",
    ]


@pytest.mark.parametrize(("name", "dim", "projection"), [("vae", 2, "identity"), ("ae", 5, "pca")])
def test_map(client: TestClient, name: str, dim: int, projection: str) -> None:
    result = client.get(f"/api/runs/{name}/map").json()
    n = len(result["points"])
    assert n > 0 and all(len(p) == 2 for p in result["points"])
    assert len(result["indices"]) == n and len(result["labels"]) == n
    assert result["projection"] == projection
    assert len(result["plane"]["center"]) == dim
    assert np.array(result["plane"]["axes"]).shape == (2, dim)
    b, points = result["bounds"], np.array(result["points"])
    assert b["xmin"] <= points[:, 0].min() and points[:, 0].max() <= b["xmax"]
    assert b["ymin"] <= points[:, 1].min() and points[:, 1].max() <= b["ymax"]


def test_map_images_hold_each_point_s_test_image_in_order(client: TestClient) -> None:
    result = client.get("/api/runs/vae/map").json()
    response = client.get("/api/runs/vae/map_images")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    sheet = np.asarray(Image.open(io.BytesIO(response.content)))
    columns, n = result["image_columns"], len(result["indices"])
    assert sheet.shape == (8 * -(-n // columns), 8 * columns)
    for i in (0, n // 2, n - 1):
        index = result["indices"][i]
        alone = np.asarray(_png(client.get(f"/api/runs/vae/test_image/{index}").json()["image"]))
        row, column = divmod(i, columns)
        np.testing.assert_array_equal(
            sheet[8 * row : 8 * row + 8, 8 * column : 8 * column + 8], alone
        )


def test_decode_z_is_deterministic_and_png_sized(client: TestClient) -> None:
    body = {"z": [[0.0, 0.0], [1.5, -2.0]]}
    first, second = (client.post("/api/runs/vae/decode", json=body).json() for _ in range(2))
    assert first == second and len(first["images"]) == 2
    assert first["z"] == body["z"]
    image = _png(first["images"][0])
    assert image.size == (8, 8) and image.mode == "L"


def test_points_lift_to_z_on_the_plane(client: TestClient) -> None:
    plane = client.get("/api/runs/ae/map").json()["plane"]
    result = client.post("/api/runs/ae/decode", json={"points": [[0.5, -1.0]]}).json()
    expected = np.array(plane["center"]) + np.array([0.5, -1.0]) @ np.array(plane["axes"])
    assert np.allclose(result["z"][0], expected, atol=1e-5)
    by_z = client.post("/api/runs/ae/decode", json={"z": result["z"]}).json()
    assert by_z["images"] == result["images"]


def test_encode_drawing_and_round_trip(client: TestClient) -> None:
    drawing = Image.new("RGB", (280, 280), "black")  # white strokes on black, as a canvas sends
    drawing.paste((255, 255, 255), (120, 40, 160, 240))
    result = client.post("/api/runs/ae/encode", json={"image": _data_url(drawing)}).json()
    assert len(result["z"]) == 5 and len(result["point"]) == 2
    assert _png(result["reconstruction"]).size == (8, 8)
    bare = _data_url(drawing, "JPEG").split(",", 1)[1]  # bare base64 and JPEG work too
    assert client.post("/api/runs/vae/encode", json={"image": bare}).status_code == 200


def test_encode_of_a_test_image_gives_its_code(client: TestClient) -> None:
    shown = client.get("/api/runs/vae/test_image/3").json()
    assert _png(shown["image"]).size == (8, 8) and isinstance(shown["label"], int)
    encoded = client.post("/api/runs/vae/encode", json={"image": shown["image"]}).json()
    assert np.allclose(encoded["z"], shown["z"], atol=0.05)  # PNG quantisation only
    assert np.allclose(shown["point"], shown["z"], atol=1e-6)  # identity plane for D = 2


def test_sample_is_seeded(client: TestClient) -> None:
    a, b, c = (
        client.post("/api/runs/vae/sample", json={"n": 3, "seed": s}).json() for s in (7, 7, 8)
    )
    assert a == b and a["z"] != c["z"]
    assert len(a["images"]) == 3 and np.array(a["z"]).shape == (3, 2)


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolate_between_test_images(client: TestClient, spherical: bool) -> None:
    body = {"from_index": 0, "to_index": 5, "steps": 6, "spherical": spherical}
    result = client.post("/api/runs/ae/interpolate", json=body).json()
    assert len(result["images"]) == 6 and len(result["points"]) == 6
    ends = [client.get(f"/api/runs/ae/test_image/{i}").json()["z"] for i in (0, 5)]
    assert np.allclose(result["z"][0], ends[0], atol=1e-5)
    assert np.allclose(result["z"][-1], ends[1], atol=1e-5)


def test_interpolate_between_codes(client: TestClient) -> None:
    body = {"z_a": [0.0, 0.0], "z_b": [1.0, 2.0], "steps": 3}
    result = client.post("/api/runs/vae/interpolate", json=body).json()
    assert np.allclose(result["z"], [[0, 0], [0.5, 1.0], [1, 2]])


def test_index_page_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "html" in page.headers["content-type"]
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/runs/{name}/decode" in paths and "/api/runs/{name}/interpolate" in paths


def test_openapi_documents_the_errors_returned() -> None:
    """Every error is {"detail": one line}, and each route lists the ones it can answer: no
    FastAPI validation-error list, which this API never returns."""
    from vaelab.explorer.app import _openapi

    app = fastapi.FastAPI()
    from vaelab.explorer.api import add_routes

    add_routes(app, {}, max_batch=4)
    schema = _openapi(app)
    error = {"$ref": "#/components/schemas/ErrorDetail"}
    assert schema["components"]["schemas"]["ErrorDetail"]["required"] == ["detail"]
    assert "HTTPValidationError" not in str(schema)
    documented = {
        (path, method): set(operation["responses"])
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    assert documented[("/api/runs", "get")] == {"200", "400", "413", "503"}
    assert documented[("/api/runs/{name}/map", "get")] == {"200", "400", "404", "413", "503"}
    for endpoint in ("decode", "encode", "sample", "interpolate"):
        assert documented[(f"/api/runs/{{name}}/{endpoint}", "post")] == {
            "200",
            "400",
            "404",
            "413",
            "422",
            "503",
        }
    decode = schema["paths"]["/api/runs/{name}/decode"]["post"]["responses"]
    assert decode["422"]["content"]["application/json"]["schema"] == error


def test_docs_pages_are_gone_rather_than_blank_offline(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        assert client.get(path).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/", {}),
        ("get", "/api/runs", {}),
        ("get", "/static/explorer.js", {}),
        ("get", "/api/runs/nope/map", {}),  # 404
        ("post", "/api/runs/vae/decode", {"json": {}}),  # 422
        ("post", "/api/runs/vae/decode", {"content": b"x" * (MAX_BYTES + 1)}),  # 413
        ("get", "/api/runs", {"headers": {"host": "attacker.example"}}),  # 400
    ],
)
def test_every_answer_has_the_security_headers(client: TestClient, method, path, kwargs) -> None:
    response = getattr(client, method)(path, **kwargs)
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:80", "[::1]:8000", "LOCALHOST"]
)
def test_loopback_hosts_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/api/runs", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "localhost.attacker.example:8000", ""])
def test_other_hosts_are_refused_as_dns_rebinding_would_need(client: TestClient, host) -> None:
    detail = _refused(client.get("/api/runs", headers={"host": host}), 400)
    assert "Host header" in detail and "--allowed-host" in detail


def test_allowed_hosts_are_loopback_the_bound_address_and_the_named(runs: list[Path]) -> None:
    from vaelab.explorer.server import allowed_hosts

    assert allowed_hosts("0.0.0.0", ["lab.lan"]) == ["localhost", "127.0.0.1", "::1", "lab.lan"]
    assert allowed_hosts("192.168.1.5") == ["localhost", "127.0.0.1", "::1", "192.168.1.5"]
    lan = TestClient(create_app(runs, allowed_hosts=allowed_hosts("0.0.0.0", ["Lab.lan"])))
    assert lan.get("/api/runs", headers={"host": "lab.lan:8000"}).status_code == 200
    assert lan.get("/api/runs", headers={"host": "localhost"}).status_code == 200
    _refused(lan.get("/api/runs", headers={"host": "0.0.0.0:8000"}), 400)


# --- bad inputs -----------------------------------------------------------------------------

BAD_BODIES = [
    ("decode", {"z": [[0.0, 0.0, 0.0]]}, "3 values"),  # wrong length for D = 2
    ("decode", {"z": [[1e4, 0.0]]}, "less than or equal"),
    ("decode", {"z": [[-1e4, 0.0]]}, "greater than or equal"),
    ("decode", {"z": []}, "1 to 8 rows"),
    ("decode", {"z": [[0.0, 0.0]] * (MAX_BATCH + 1)}, "1 to 8 rows"),
    ("decode", {"points": [[0.0]]}, "at least 2"),
    ("decode", {}, "exactly one"),
    ("decode", {"z": [[0, 0]], "points": [[0, 0]]}, "exactly one"),
    ("decode", {"z": [[0, 0]], "extra": 1}, "Extra inputs"),
    ("decode", {"z": "zero"}, "valid list"),
    ("encode", {"image": "!!not base64!!"}, "base64"),
    ("encode", {"image": base64.b64encode(b"hello, not an image").decode()}, "could not read"),
    ("encode", {"image": "data:image/png,rawdata"}, "data URL"),
    ("encode", {"image": ""}, "empty"),
    ("sample", {"n": 0}, "greater than or equal"),
    ("sample", {"n": 65}, "less than or equal"),
    ("sample", {"seed": -1}, "greater than or equal"),
    ("sample", {"n": 2.5}, "integer"),
    ("interpolate", {"from_index": 0, "to_index": 10**6}, "out of range"),
    ("interpolate", {"from_index": -1, "to_index": 1}, "greater than or equal"),
    ("interpolate", {"from_index": 0, "to_index": 1, "steps": 1}, "greater than or equal"),
    ("interpolate", {"from_index": 0, "to_index": 1, "steps": 65}, "less than or equal"),
    ("interpolate", {"from_index": 0}, "either"),
    ("interpolate", {"from_index": 0, "to_index": 1, "z_a": [0, 0]}, "either"),
    ("interpolate", {"z_a": [0, 0], "z_b": [0, 0, 0]}, "3 values"),
    ("interpolate", {"z_a": [1, 1], "z_b": [-1, -1], "spherical": True}, "opposite"),
]


@pytest.mark.parametrize(("endpoint", "body", "message"), BAD_BODIES)
def test_bad_bodies_are_422(client: TestClient, endpoint: str, body: dict, message: str) -> None:
    assert message in _refused(client.post(f"/api/runs/vae/{endpoint}", json=body), 422)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_values_are_422(client: TestClient, value: str) -> None:
    body = '{"z": [[0.0, VALUE]]}'.replace("VALUE", value)  # json= would refuse or emit NaN
    response = client.post(
        "/api/runs/vae/decode", content=body, headers={"content-type": "application/json"}
    )
    _refused(response, 422)


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/runs/vae/decode", content=b"{not json", headers={"content-type": "application/json"}
    )
    _refused(response, 422)


def test_images_of_more_than_a_megapixel_are_refused_before_decoding(client: TestClient) -> None:
    huge = Image.new("1", (1025, 1024))  # a tiny file declaring 1,049,600 pixels
    detail = _refused(client.post("/api/runs/vae/encode", json={"image": _data_url(huge)}), 422)
    assert "1025x1024" in detail and "1,048,576" in detail
    wide = Image.new("L", (4097, 8), 255)  # few pixels, however wide: read
    assert client.post("/api/runs/vae/encode", json={"image": _data_url(wide)}).status_code == 200


def test_a_large_jpeg_is_reduced_while_it_is_decoded(runs: list[Path]) -> None:
    """A 12-megapixel photo is decoded at 1/8 of its size (500x375), not refused; it encodes
    as the same picture sent small does, within JPEG's error."""
    client = TestClient(create_app(runs), base_url="http://localhost")  # a 1 MB body limit
    photo = Image.new("L", (4000, 3000), 255)
    photo.paste(0, (1000, 750, 3000, 2250))  # a dark square in the middle
    big = client.post("/api/runs/vae/encode", json={"image": _data_url(photo, "JPEG")})
    assert big.status_code == 200, big.text
    small = photo.resize((8, 8), Image.Resampling.LANCZOS)
    alike = client.post("/api/runs/vae/encode", json={"image": _data_url(small, "PNG")})
    assert np.allclose(big.json()["z"], alike.json()["z"], atol=0.1)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", _png_bytes()[:40], b"\x89PNG\r\n\x1a\n" + b"\0" * 64],
    ids=["garbage", "truncated", "png-signature-only"],
)
def test_unreadable_images_are_422_without_python_reprs(client: TestClient, data: bytes) -> None:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    detail = _refused(client.post("/api/runs/vae/encode", json={"image": url}), 422)
    assert detail.startswith("could not read the image as PNG")
    assert "BytesIO" not in detail and " object at " not in detail and "0x" not in detail


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/runs/nope/map"),
        ("post", "/api/runs/nope/decode"),
        ("get", "/api/runs/nope/test_image/0"),
        ("get", "/api/runs/..%2F..%2Fetc/map"),
    ],
)
def test_unknown_runs_are_404(client: TestClient, method: str, path: str) -> None:
    body = {"json": {"z": [[0, 0]]}} if method == "post" else {}
    response = getattr(client, method)(path, **body)
    assert response.status_code == 404 and response.json()["detail"]


@pytest.mark.parametrize("index", ["100000", "-1", "abc", "1.5"])
def test_bad_test_image_indices_are_422(client: TestClient, index: str) -> None:
    _refused(client.get(f"/api/runs/vae/test_image/{index}"), 422)


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = {"image": "A" * (MAX_BYTES + 10)}
    assert "limit" in _refused(client.post("/api/runs/vae/encode", json=big), 413)

    def chunks():  # no Content-Length: the streamed size must be counted
        for _ in range(10):
            yield b" " * (MAX_BYTES // 4)

    response = client.post(
        "/api/runs/vae/decode", content=chunks(), headers={"content-type": "application/json"}
    )
    _refused(response, 413)


def test_still_serves_after_bad_inputs(client: TestClient) -> None:
    for endpoint, body, _ in BAD_BODIES:
        client.post(f"/api/runs/vae/{endpoint}", json=body)
    response = client.post("/api/runs/vae/decode", json={"z": [[0.1, 0.2]]})
    assert response.status_code == 200 and len(response.json()["images"]) == 1
