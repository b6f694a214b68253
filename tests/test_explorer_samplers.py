"""Where the explorer's samples come from: N(0, T^2 I) for a VAE, a Gaussian mixture fitted to an
autoencoder's codes, the run's own prior at T = 1 for the rest; the t-SNE view of codes of more
than two dimensions (`vaelab plot`'s projection); the data's background, which uploads are
prepared against."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.conftest import _tiny_run

from vaelab import train
from vaelab.explorer.runs import background_of
from vaelab.explorer.samplers import fit_code_mixture

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vaelab.explorer import create_app  # noqa: E402


def _two_clusters(n: int = 2000) -> torch.Tensor:
    """(n, 3) codes: 70 % around (4, 0, 0), 30 % around (-4, 0, 0), each with s.d. 0.5."""
    g = torch.Generator().manual_seed(0)
    k = (torch.rand(n, generator=g) < 0.3).long()
    centres = torch.tensor([[4.0, 0, 0], [-4.0, 0, 0]])
    return centres[k] + 0.5 * torch.randn(n, 3, generator=g)


def test_the_mixture_sampler_draws_where_the_codes_are_at_its_temperature() -> None:
    codes = _two_clusters()
    mixture = fit_code_mixture(codes)
    assert mixture is not None and len(mixture.weights) == 10
    drawn = mixture.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert drawn.dtype == torch.float32 and drawn.shape == (20_000, 3)
    # the clusters' shares and spreads come back
    right = drawn[:, 0] > 0
    assert right.float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert drawn[right, 1].std().item() == pytest.approx(0.5, rel=0.08)
    # T scales the spread around each component: at T = 0.2 the draws stay near their means
    cold = mixture.sample(20_000, generator=torch.Generator().manual_seed(1), temperature=0.2)
    means = mixture.means.float()
    off = torch.cdist(drawn, means).min(dim=1).values.mean()
    assert torch.cdist(cold, means).min(dim=1).values.mean() < 0.3 * off
    again = mixture.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, drawn)  # the same seed, the same draws


def test_the_mixture_needs_enough_codes() -> None:
    assert fit_code_mixture(torch.randn(5, 4)) is None
    small = fit_code_mixture(torch.randn(40, 4))  # 40 codes of 4 dims: 5 components
    assert small is not None and len(small.weights) == 5


def test_background_is_the_median_of_the_borders() -> None:
    x = torch.zeros(10, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0
    assert background_of(x, (0.0, 1.0)) == (0.0,)
    assert background_of(1 - x, (0.0, 1.0)) == (1.0,)
    rgb = torch.full((4, 3, 6, 6), 0.5)
    assert background_of(rgb, (-1.0, 1.0)) == pytest.approx((0.75, 0.75, 0.75))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("samplers")
    configs = {
        "vae": _tiny_run(epochs=1, model={"latent_dim": 3}),
        "ae": _tiny_run(epochs=1, model={"model": "ae", "latent_dim": 4}),
        "vamp": _tiny_run(epochs=1, model={"prior": "vamp", "pseudo_inputs": 5}),
    }
    for name, config in configs.items():
        train(config, root / name, progress=False)
    app = create_app([root / name for name in configs], browser_decoding=False)
    return TestClient(app, base_url="http://localhost")


def test_runs_say_how_they_sample(client: TestClient) -> None:
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert [runs[n]["sampler"] for n in ("vae", "ae", "vamp")] == ["normal", "mixture", "prior"]
    assert [runs[n]["temperature"] for n in ("vae", "ae", "vamp")] == [True, True, False]
    assert runs["vae"]["mixture"] is None and runs["vamp"]["mixture"] is None
    mixture = runs["ae"]["mixture"]
    k = len(mixture["weights"])
    assert 1 <= k <= 10 and sum(mixture["weights"]) == pytest.approx(1.0)
    assert len(mixture["means"]) == k and len(mixture["means"][0]) == 4
    lower = torch.tensor(mixture["cholesky"])
    assert lower.shape == (k, 4, 4) and torch.equal(lower, lower.tril())
    assert runs["vae"]["background"] == [0.0]  # the digits are white on black


def test_sample_temperature_scales_a_normal_prior(client: TestClient) -> None:
    def codes(t: float) -> torch.Tensor:
        body = {"n": 64, "seed": 3, "temperature": t}
        response = client.post("/api/runs/vae/sample", json=body)
        assert response.status_code == 200, response.text
        return torch.tensor(response.json()["z"])

    torch.testing.assert_close(codes(0.5), 0.5 * codes(1.0))


def test_sample_of_an_autoencoder_comes_from_its_mixture(client: TestClient) -> None:
    response = client.post("/api/runs/ae/sample", json={"n": 64, "seed": 0})
    z = torch.tensor(response.json()["z"])
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    means = torch.tensor(runs["ae"]["mixture"]["means"])
    # each draw lies nearer some component's mean than N(0, I)'s draws of an unfitted sampler
    nearest = torch.cdist(z, means).min(dim=1).values
    spread = torch.tensor(runs["ae"]["mixture"]["cholesky"]).diagonal(dim1=1, dim2=2).max()
    assert nearest.median() < 4 * spread
    cold = torch.tensor(
        client.post("/api/runs/ae/sample", json={"n": 64, "seed": 0, "temperature": 0.1}).json()[
            "z"
        ]
    )
    assert torch.cdist(cold, means).min(dim=1).values.median() < 0.5 * nearest.median()


def test_a_learned_prior_refuses_a_temperature(client: TestClient) -> None:
    response = client.post("/api/runs/vamp/sample", json={"n": 4, "temperature": 0.5})
    assert response.status_code == 422
    assert "temperature 1 only" in response.json()["detail"]
    assert client.post("/api/runs/vamp/sample", json={"n": 4}).status_code == 200
    for bad in (0, -1, 2.5, "hot"):
        response = client.post("/api/runs/vae/sample", json={"temperature": bad})
        assert response.status_code == 422, bad


def test_embedding_is_a_tsne_of_the_map_codes(client: TestClient) -> None:
    reply = client.get("/api/runs/ae/embedding").json()
    the_map = client.get("/api/runs/ae/map").json()
    assert reply["method"] == "tsne"
    assert len(reply["points"]) == len(the_map["indices"]) == len(reply["codes"])
    index = the_map["indices"][7]
    test = client.get(f"/api/runs/ae/test_image/{index}").json()
    assert reply["codes"][7] == pytest.approx(test["z"])
    points = torch.tensor(reply["points"])
    b = reply["bounds"]
    assert b["xmin"] <= points[:, 0].min() and points[:, 0].max() <= b["xmax"]
    assert client.get("/api/runs/ae/embedding").json()["points"] == reply["points"]  # cached


def test_embedding_of_a_2d_space_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "vae2"
    train(_tiny_run(epochs=1), run, progress=False)
    client = TestClient(create_app([run], browser_decoding=False), base_url="http://localhost")
    response = client.get("/api/runs/vae2/embedding")
    assert response.status_code == 422 and "2-D latent space" in response.json()["detail"]
