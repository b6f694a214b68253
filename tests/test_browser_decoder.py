"""Which runs the explorer's page decodes itself, with which ONNX decoder, and what the API
says about it (`vaelab.explorer.browser_decoder`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import RunConfig, train

pytest.importorskip("fastapi")
onnxruntime = pytest.importorskip("onnxruntime")
from fastapi.testclient import TestClient  # noqa: E402

from vaelab.cli.export import export_run  # noqa: E402
from vaelab.explorer import browser_decoder as bd  # noqa: E402
from vaelab.explorer import create_app  # noqa: E402
from vaelab.runs import open_run  # noqa: E402

needs_runtime = pytest.mark.skipif(
    not bd.runtime_installed(), reason="onnxruntime-web is not vendored (make web)"
)


def _train(folder: Path, **model) -> Path:
    config = RunConfig.from_dict(
        {
            "model": {"latent_dim": 3, "hidden_dims": [16], **model},
            "data": {"dataset": "digits"},
            "train": {"epochs": 1, "device": "cpu"},
        }
    )
    train(config, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("bd") / "vae")


def _decoded(onnx: bytes, z: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return session.run(["mean"], {"z": z})[0]


@needs_runtime
def test_an_exported_decoder_decodes_as_the_model(vae: Path) -> None:
    trained = open_run(vae)
    codes = torch.randn(10, 3)
    found = bd.browser_decoder(trained, codes)
    assert found.available and "exported when the server started" in found.note
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.inference_mode():
        want = trained.model.decode(torch.from_numpy(z)).numpy()
    assert np.abs(_decoded(found.onnx, z) - want).max() < 1e-5


@needs_runtime
def test_the_runs_own_export_is_used_only_for_its_checkpoint(vae: Path, tmp_path: Path) -> None:
    export_run(vae, checks=20)
    trained = open_run(vae)
    found = bd.browser_decoder(trained, torch.zeros(4, 3))
    assert "the run's ONNX export" in found.note
    assert found.onnx == (vae / "onnx" / "decoder.onnx").read_bytes()
    sidecar = json.loads((vae / "onnx" / "onnx.json").read_text())
    (vae / "onnx" / "onnx.json").write_text(json.dumps({**sidecar, "epoch": 99}))
    try:  # an export of other weights (say, before training resumed) is not used
        assert (
            "exported when the server started"
            in bd.browser_decoder(trained, torch.zeros(4, 3)).note
        )
    finally:
        (vae / "onnx" / "onnx.json").write_text(json.dumps(sidecar))


def test_runs_the_browser_cannot_decode_are_decoded_by_the_server(tmp_path: Path) -> None:
    ar = open_run(_train(tmp_path / "ar", autoregressive="local"))
    note = bd.browser_decoder(ar, torch.zeros(2, 3)).note
    assert note.startswith("decoded by the server") and "autoregressive" in note
    cvae = open_run(_train(tmp_path / "cvae", model="cvae"))
    assert "class label" in bd.browser_decoder(cvae, torch.zeros(2, 3)).note


def test_without_the_runtime_the_server_decodes(vae: Path, monkeypatch) -> None:
    monkeypatch.setattr(bd, "VENDOR", Path("/nonexistent"))
    found = bd.browser_decoder(open_run(vae), torch.zeros(2, 3))
    assert not found.available and "make web" in found.note


@needs_runtime
def test_the_api_serves_the_decoder_and_says_where_runs_decode(vae: Path, tmp_path: Path) -> None:
    ar = _train(tmp_path / "ar", autoregressive="local")
    ae = _train(tmp_path / "ae", model="ae")
    client = TestClient(create_app({"vae": vae, "ar": ar, "ae": ae}), base_url="http://localhost")
    listed = client.get("/api/runs").json()
    assert listed["runtime"] == bd.RUNTIME_URL
    info = {run["name"]: run for run in listed["runs"]}
    assert info["vae"]["browser_decoder"] and not info["ar"]["browser_decoder"]
    assert info["vae"]["normal_samples"] and info["vae"]["sampler"] == "normal"
    # an autoencoder samples from the mixture fitted to its codes, which the page draws from
    assert not info["ae"]["normal_samples"] and info["ae"]["sampler"] == "mixture"
    assert info["ae"]["mixture"] is not None
    assert info["vae"]["data_range"] == [0.0, 1.0]
    onnx = client.get("/api/runs/vae/decoder.onnx")
    assert onnx.status_code == 200 and onnx.headers["content-type"] == "application/octet-stream"
    assert _decoded(onnx.content, np.zeros((1, 3), np.float32)).shape == (1, 1, 8, 8)
    missing = client.get("/api/runs/ar/decoder.onnx")
    assert missing.status_code == 404 and "autoregressive" in missing.json()["detail"]
    off = TestClient(create_app({"vae": vae}, browser_decoding=False), base_url="http://localhost")
    assert "--server-decoding" in off.get("/api/runs").json()["runs"][0]["decoding"]
    assert off.get("/api/runs/vae/decoder.onnx").status_code == 404


def test_slider_ranges_come_from_the_prior_or_the_codes(vae: Path, tmp_path: Path) -> None:
    ae = _train(tmp_path / "ae", model="ae")
    client = TestClient(
        create_app({"vae": vae, "ae": ae}, browser_decoding=False), base_url="http://localhost"
    )
    vae_ranges = np.array(client.get("/api/runs/vae/map").json()["ranges"])
    assert vae_ranges.shape == (3, 2)
    assert (vae_ranges[:, 0] <= -3.09).all() and (vae_ranges[:, 1] >= 3.09).all()
    ae_map = client.get("/api/runs/ae/map").json()
    codes = np.array(
        [client.get(f"/api/runs/ae/test_image/{i}").json()["z"] for i in ae_map["indices"][:50]]
    )
    ranges = np.array(ae_map["ranges"])
    assert (ranges[:, 0] < codes.min(0)).all() and (ranges[:, 1] > codes.max(0)).all()
