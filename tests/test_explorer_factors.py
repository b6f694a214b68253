"""The explorer's API on data with known generative factors (`shapes`) and without (`digits`):
the factors' description in /api/runs, each map point's and test image's factor indices, and
null for a run without factors."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab import RunConfig, train

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vaelab.data.shapes import SHAPE_NAMES, grid_for, render_shapes  # noqa: E402
from vaelab.explorer import create_app  # noqa: E402


def _train(folder: Path, data: dict) -> Path:
    config = RunConfig.from_dict(
        {
            "model": {"model": "vae", "latent_dim": 2, "hidden_dims": [32]},
            "data": data,
            "train": {"epochs": 1, "batch_size": 256, "device": "cpu"},
        }
    )
    train(config, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("factors")
    runs = {
        "shapes": _train(root / "shapes", {"dataset": "shapes", "image_size": 16}),
        "digits": _train(root / "digits", {"dataset": "digits"}),
    }
    return TestClient(create_app(runs), base_url="http://localhost")


def _runs(client: TestClient) -> dict[str, dict]:
    return {run["name"]: run for run in client.get("/api/runs").json()["runs"]}


def test_runs_describe_the_factors(client: TestClient) -> None:
    runs = _runs(client)
    assert runs["digits"]["factors"] is None
    factors = {f["name"]: f for f in runs["shapes"]["factors"]}
    assert list(factors) == ["shape", "scale", "orientation", "x", "y"]
    assert [f["categorical"] for f in factors.values()] == [True, False, False, False, False]
    # The shape factor is the class label, so its legend names the shapes.
    assert factors["shape"]["labels"] == list(SHAPE_NAMES) == runs["shapes"]["class_names"]
    x, orientation = factors["x"], factors["orientation"]
    assert len(x["values"]) == len(x["labels"]) == 8
    assert (x["values"][0], x["values"][-1]) == (0.0, 1.0)
    assert (x["labels"][0], x["labels"][-1]) == ("0", "1")
    assert math.isclose(orientation["values"][-1], 2 * math.pi * 7 / 8)
    assert orientation["labels"][-1] == "5.5"


def test_map_points_carry_their_factors(client: TestClient) -> None:
    result = client.get("/api/runs/shapes/map").json()
    rows = np.array(result["factors"])  # (M, F)
    sizes = [len(f["values"]) for f in _runs(client)["shapes"]["factors"]]
    assert rows.shape == (len(result["points"]), len(sizes))
    assert (rows >= 0).all() and (rows < np.array(sizes)).all()
    assert (rows[:, 0] == np.array(result["labels"])).all()
    for f in range(len(sizes)):  # a random test split shows several values of every factor
        assert len(np.unique(rows[:, f])) > 1
    assert client.get("/api/runs/digits/map").json()["factors"] is None


def test_test_image_factors_are_those_it_was_drawn_with(client: TestClient) -> None:
    result = client.get("/api/runs/shapes/map").json()
    grid = grid_for((16, 16))
    for k in (0, len(result["indices"]) - 1):
        shown = client.get(f"/api/runs/shapes/test_image/{result['indices'][k]}").json()
        assert shown["factors"] == result["factors"][k]
        png = shown["image"].split(",", 1)[1]
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))) > 127  # (16, 16)
        assert (pixels == render_shapes(grid, np.array([shown["factors"]]))[0]).all()
    assert client.get("/api/runs/digits/test_image/0").json()["factors"] is None


def test_openapi_documents_the_factor_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["FactorInfo"]["required"]) == {"name", "categorical", "values", "labels"}
    for model in ("RunInfo", "MapResponse", "ExampleImageResponse"):
        field = schemas[model]["properties"]["factors"]
        assert {"type": "null"} in field["anyOf"] and field["description"]
    assert "factors" in schemas["RunInfo"]["required"]
