"""Property-based fuzz of the explorer's API: arbitrary JSON bodies (wrong types, huge numbers,
nested junk, long lists) to every POST endpoint and random run names and paths. Whatever comes
in, the answer is never a 5xx."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from vaelab import RunConfig, train

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vaelab.explorer import create_app  # noqa: E402

ENDPOINTS = ("decode", "encode", "sample", "interpolate")
KEYS = (
    "z",
    "points",
    "image",
    "n",
    "seed",
    "from_index",
    "to_index",
    "z_a",
    "z_b",
    "steps",
    "spherical",
    "extra",
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    runs = []
    for model, latent_dim in (("vae", 2), ("ae", 5)):
        config = RunConfig.from_dict(
            {
                "model": {"model": model, "latent_dim": latent_dim, "hidden_dims": [16]},
                "data": {"dataset": "digits"},
                "train": {"epochs": 1, "batch_size": 256, "device": "cpu"},
            }
        )
        folder = tmp_path_factory.mktemp("fuzz") / model
        train(config, folder, progress=False)
        runs.append(folder)
    return TestClient(
        create_app(runs, max_request_bytes=200_000, max_batch=64), base_url="http://localhost"
    )


numbers = (
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.sampled_from([0, 1, -1, 2, 63, 64, 65, 10**400, 1e308, -1e308])
)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
vectors = st.lists(numbers, max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
field_values = (
    json_values
    | vectors
    | st.lists(vectors, max_size=70)
    | st.lists(st.lists(numbers, min_size=2, max_size=2), max_size=4)
)
bodies = st.dictionaries(st.sampled_from(KEYS), field_values, max_size=5) | json_values


def _dumps(body: object) -> str:
    """JSON as a browser-less client might send it: NaN and Infinity included."""
    return json.dumps(body, allow_nan=True)


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), run=st.sampled_from(["vae", "ae"]), body=bodies)
def test_post_bodies_never_5xx(client: TestClient, endpoint: str, run: str, body: object) -> None:
    response = client.post(
        f"/api/runs/{run}/{endpoint}",
        content=_dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, (body, response.text)
    assert response.status_code in (200, 400, 404, 413, 415, 422), response.text


@FUZZ
@given(
    name=st.text(max_size=30), tail=st.text(max_size=30), method=st.sampled_from(["get", "post"])
)
def test_random_names_and_paths_never_5xx(
    client: TestClient, name: str, tail: str, method: str
) -> None:
    name, tail = quote(name, safe="/.%"), quote(tail, safe="/.%")  # as a client would send them
    for path in (
        f"/api/runs/{name}/map",
        f"/api/runs/vae/test_image/{tail}",
        f"/api/runs/{name}/{tail}",
        f"/{name}/{tail}",
        f"/static/{tail}",
    ):
        if path.startswith("//"):  # a network-path reference, not a path: no client sends it
            continue
        response = getattr(client, method)(path)
        assert response.status_code < 500, (path, response.text)


@FUZZ
@given(data=st.binary(max_size=400), endpoint=st.sampled_from(ENDPOINTS))
def test_raw_bytes_never_5xx(client: TestClient, data: bytes, endpoint: str) -> None:
    response = client.post(
        f"/api/runs/vae/{endpoint}", content=data, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text


@FUZZ
@given(
    data=st.binary(max_size=300)
    | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"]),
    prefix=st.sampled_from(["", "data:image/png;base64,", "data:;base64,"]),
)
def test_image_bytes_never_5xx(client: TestClient, data: bytes, prefix: str) -> None:
    image = prefix + base64.b64encode(data).decode()
    response = client.post("/api/runs/ae/encode", json={"image": image})
    assert response.status_code < 500, response.text


def _operations(client: TestClient) -> list[tuple[str, str, dict]]:
    schema = client.get("/openapi.json").json()
    return [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


path_values = st.integers(min_value=-5, max_value=10**6).map(str) | st.text(max_size=12).map(
    lambda text: quote(text, safe="")
)


@FUZZ
@given(data=st.data())
def test_every_operation_of_the_schema_answers_only_its_documented_statuses(
    client: TestClient, data: st.DataObject
) -> None:
    """Each operation /openapi.json lists, with fuzzed path parameters and bodies: the status is
    one the schema documents for it, and every error is the documented one-line detail."""
    path, method, operation = data.draw(st.sampled_from(_operations(client)))
    for param in operation.get("parameters", []):
        value = data.draw(st.sampled_from(["vae", "ae"]) | path_values)
        path = path.replace("{" + param["name"] + "}", value or "x")
    kwargs = {}
    if "requestBody" in operation:
        body = data.draw(bodies)
        kwargs = {"content": _dumps(body), "headers": {"content-type": "application/json"}}
    response = client.request(method.upper(), path, **kwargs)
    assert str(response.status_code) in operation["responses"], (path, response.text)
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail


HOSTS = st.sampled_from(
    [
        "localhost",
        "LocalHost:8000",
        "127.0.0.1:1",
        "[::1]:80",
        "[::1]",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "attacker.example:8000",
        "localhost:80:80",
        "[::1",
        "",
    ]
) | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)


@FUZZ
@given(header=HOSTS)
def test_any_host_header_is_answered_or_refused_in_one_line(
    client: TestClient, header: str
) -> None:
    """The Host allow-list: only localhost, 127.0.0.1 and [::1] (any port) are answered."""
    response = client.get("/api/runs", headers={"host": header})
    allowed = {"localhost", "127.0.0.1", "::1"}
    name = header.lower()
    name = name[1 : name.find("]")] if name.startswith("[") and "]" in name else name
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    assert response.status_code == (200 if name in allowed else 400), (header, response.text)
    if response.status_code == 400:
        assert "Host header" in response.json()["detail"]
