"""The explorer's JSON endpoints over loaded runs: runs, map, decode, encode, sample,
interpolate and test images. Plain `def` endpoints: FastAPI runs them in its threadpool, and
each run's lock keeps one model call at a time. A label-conditional run decodes with the
request's `label` (see `conditioning`)."""

from __future__ import annotations

from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Response
from fastapi import Path as PathParam

from vaelab.explorer import schemas as s
from vaelab.explorer.browser_decoder import RUNTIME_URL, runtime_installed
from vaelab.explorer.conditioning import checked_label, decode_labels, refuse_completion
from vaelab.explorer.runs import ServedRun, read_data_url, to_data_urls
from vaelab.explorer.samplers import draw_codes, sampler_of
from vaelab.models import slerp

MAP_MARGIN = 0.05  # the map's bounds leave this share of each side's range around the points


def _rows(values: list[list[float]], what: str, length: int, max_batch: int) -> torch.Tensor:
    """A validated (B, length) float32 tensor from JSON rows, or a 422 saying what is wrong."""
    if not values or len(values) > max_batch:
        raise HTTPException(422, f"{what} must have 1 to {max_batch} rows, got {len(values)}")
    for k, row in enumerate(values):
        if len(row) != length:
            raise HTTPException(422, f"{what}[{k}] has {len(row)} values; this run needs {length}")
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), length)


def _opposite(z_a: torch.Tensor, z_b: torch.Tensor) -> bool:
    """Whether z_a and z_b point in (nearly) opposite directions, where slerp has no one path."""
    norms = z_a.double().norm() * z_b.double().norm()
    return bool(norms > 0) and bool(torch.dot(z_a.double(), z_b.double()) / norms < -1 + 1e-6)


def _bounds(points: torch.Tensor) -> s.Bounds:
    if len(points) == 0:
        return s.Bounds(xmin=-1.0, xmax=1.0, ymin=-1.0, ymax=1.0)
    low, high = points.min(dim=0).values, points.max(dim=0).values
    pad = ((high - low) * MAP_MARGIN).clamp(min=1e-3)
    (xmin, ymin), (xmax, ymax) = (low - pad).tolist(), (high + pad).tolist()
    return s.Bounds(xmin=xmin, xmax=xmax, ymin=ymin, ymax=ymax)


ERROR_CAUSES = {
    400: "the Host header is not one this server answers to, the Content-Length is not a "
    "number, or the run cannot answer this request (a completion model)",
    404: "no run of that name",
    413: "the request body is larger than the server's limit",
    422: "a value of the request is missing, malformed or out of range",
}
ANY_REQUEST = (400, 413)  # what the guards in front of every route can answer
TOO_BUSY = {
    503: {
        "description": "more connections and requests at once than the server takes "
        "(answered by the server, in plain text)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


PRIOR_QUANTILE = 3.090232  # N(0, 1)'s 99.9% quantile


def _slider_ranges(run: ServedRun) -> torch.Tensor:
    """(D, 2) the sliders' ranges: see `MapResponse.ranges`."""
    codes = run.codes.float()
    if len(codes) == 0:
        low = high = torch.zeros(run.latent_dim)
    else:
        low, high = codes.min(dim=0).values, codes.max(dim=0).values
    if run.model.gaussian_prior and not run.conditional:
        return torch.stack([low.clamp(max=-PRIOR_QUANTILE), high.clamp(min=PRIOR_QUANTILE)], 1)
    margin = ((high - low) / 10).clamp(min=0.1)
    return torch.stack([low - margin, high + margin], dim=1)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the errors a route answers: `codes`, each an `ErrorDetail`, with
    those of every request (400, 413, 503)."""
    entries: dict[int | str, dict[str, Any]] = {
        code: {"model": s.ErrorDetail, "description": ERROR_CAUSES[code]}
        for code in sorted({*ANY_REQUEST, *codes})
    }
    return entries | TOO_BUSY


def file_answer(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of a route that answers a file of `media_type` for a run."""
    return {200: {"content": {media_type: {}}, "description": description}, **errors(404)}


def mixture_info(run: ServedRun) -> s.MixtureInfo:
    """An autoencoder's mixture sampler, for the page to draw from."""
    assert run.mixture is not None
    m = run.mixture
    return s.MixtureInfo(
        weights=m.weights.tolist(),
        means=m.means.tolist(),
        cholesky=torch.linalg.cholesky(m.covariances).tolist(),
    )


def factor_infos(run: ServedRun) -> list[s.FactorInfo] | None:
    info = run.factor_info
    if info is None:
        return None
    return [
        s.FactorInfo(name=name, categorical=kind, values=list(values), labels=run.factor_labels(f))
        for f, (name, values, kind) in enumerate(
            zip(info.names, info.values, info.categorical, strict=True)
        )
    ]


def factors_at(run: ServedRun, index: torch.Tensor | int) -> list | None:
    """The factor indices of test image(s) `index`: (F,) or (M, F) as lists; None without."""
    return None if run.test.factors is None else run.test.factors[index].tolist()


def run_info(run: ServedRun) -> s.RunInfo:
    """The run as /api/runs lists it."""
    sampler = sampler_of(run.model, run.mixture)
    channels, height, width = run.config.model.data_shape
    names = list(run.class_names) if run.class_names is not None else None
    return s.RunInfo(
        name=run.name,
        model=run.config.model.model,
        latent_dim=run.latent_dim,
        channels=channels,
        height=height,
        width=width,
        class_names=names,
        has_prior=run.model.has_prior,
        factors=factor_infos(run),
        conditional=run.conditional,
        labels=run.label_names(),
        classifier=run.classifier,
        completion=run.observe is not None,
        observe=run.observe,
        browser_decoder=run.browser.available,
        decoding=run.browser.note,
        normal_samples=sampler == "normal",
        sampler=sampler,
        temperature=sampler != "prior",
        mixture=None if sampler != "mixture" else mixture_info(run),
        background=list(run.background),
        data_range=list(run.data_range),
    )


def map_response(run: ServedRun) -> s.MapResponse:
    """The run's latent map as /map answers it."""
    points = run.plane.project(run.codes[run.map_indices])  # (M, 2)
    labels = None if run.test.y is None else run.test.y[run.map_indices].tolist()
    plane = s.PlaneInfo(center=run.plane.center.tolist(), axes=run.plane.axes.tolist())
    return s.MapResponse(
        points=points.tolist(),
        labels=labels,
        factors=factors_at(run, run.map_indices),
        indices=run.map_indices.tolist(),
        bounds=_bounds(points),
        plane=plane,
        projection=run.projection,
        image_columns=run.sprite_columns,
        ranges=_slider_ranges(run).tolist(),
    )


def embedding_response(run: ServedRun) -> s.EmbeddingResponse:
    """The t-SNE map of the run's map codes as /embedding answers it. Raises ValueError for a
    2-D latent space or too few codes."""
    if run.latent_dim <= 2:
        raise ValueError(f"run {run.name} has a 2-D latent space: the map is the space")
    points = run.tsne()
    return s.EmbeddingResponse(
        method="tsne",
        points=points.tolist(),
        codes=run.codes[run.map_indices].tolist(),
        bounds=_bounds(points),
    )


def example(run: ServedRun, index: int) -> s.ExampleImageResponse:
    """Test image `index` (in range) as /test_image answers it."""
    z = run.codes[index]
    label = None if run.test.y is None else int(run.test.y[index])
    return s.ExampleImageResponse(
        image=to_data_urls(run.test.x[index][None], run.data_range)[0],
        label=label,
        factors=factors_at(run, index),
        z=z.tolist(),
        point=run.plane.project(z[None])[0].tolist(),
    )


def add_routes(app: FastAPI, runs: dict[str, ServedRun], *, max_batch: int) -> None:
    """Attach the /api endpoints for `runs` (by name, in command-line order) to `app`."""

    def find(name: str) -> ServedRun:
        if name not in runs:
            known = ", ".join(runs)
            raise HTTPException(404, f"no run named {name[:100]!r}; this server has: {known}")
        return runs[name]

    def test_index(run: ServedRun, index: int, what: str) -> int:
        if not 0 <= index < len(run.test):
            last = len(run.test) - 1
            raise HTTPException(422, f"{what} {index} is out of range: use 0 to {last}")
        return index

    def images(run: ServedRun, z: torch.Tensor, y: torch.Tensor | None = None) -> list[str]:
        return to_data_urls(run.decode(z, y), run.data_range)

    def predict(run: ServedRun, x: torch.Tensor) -> s.Prediction:
        """What the run's classifier (an m2's) makes of the image x (1, C, H, W)."""
        probabilities = run.predict(x)[0]  # (K,)
        label = int(probabilities.argmax())
        return s.Prediction(
            label=label,
            probability=float(probabilities[label]),
            probabilities=probabilities.tolist(),
        )

    @app.get("/api/runs", response_model=s.RunList, responses=errors())
    def list_runs() -> s.RunList:
        infos = [run_info(run) for run in runs.values()]
        return s.RunList(runs=infos, runtime=RUNTIME_URL if runtime_installed() else None)

    @app.get(
        "/api/runs/{name}/decoder.onnx",
        response_class=Response,
        responses=file_answer(
            "application/octet-stream",
            "the run's decoder as ONNX: z (B, D) float32 -> `mean` (B, C, H, W), the mean of "
            "p(x|z) in data space (and `logits` for a Bernoulli decoder)",
        ),
    )
    def decoder_onnx(name: str) -> Response:
        run = find(name)
        if run.browser.onnx is None:
            raise HTTPException(
                404, f"run {name} has no decoder for the browser: {run.browser.note}"
            )
        return Response(run.browser.onnx, media_type="application/octet-stream")

    @app.get(
        "/api/runs/{name}/map_images",
        response_class=Response,
        responses=file_answer(
            "image/png",
            "the test images of the map's points in one PNG, in their order, `image_columns` "
            "to a row",
        ),
    )
    def map_images(name: str) -> Response:
        return Response(find(name).map_sprite(), media_type="image/png")

    @app.get("/api/runs/{name}/map", response_model=s.MapResponse, responses=errors(404))
    def latent_map(name: str) -> s.MapResponse:
        return map_response(find(name))

    @app.get(
        "/api/runs/{name}/embedding",
        response_model=s.EmbeddingResponse,
        responses=errors(404, 422),
    )
    def embedding(name: str) -> s.EmbeddingResponse:
        """The t-SNE map of the map's codes, for a latent space of more than two dimensions
        (computed on the first request, some seconds)."""
        try:
            return embedding_response(find(name))
        except ValueError as error:
            raise HTTPException(422, str(error)) from None

    @app.post(
        "/api/runs/{name}/decode", response_model=s.ImagesResponse, responses=errors(404, 422)
    )
    def decode(name: str, body: s.DecodeRequest) -> s.ImagesResponse:
        run = find(name)
        if body.z is not None:
            z = _rows(body.z, "z", run.latent_dim, max_batch)
        else:
            z = run.plane.lift(_rows(body.points or [], "points", 2, max_batch))
        y = decode_labels(run, body.label, len(z))
        return s.ImagesResponse(images=images(run, z, y), z=z.tolist())

    @app.post(
        "/api/runs/{name}/encode", response_model=s.EncodeResponse, responses=errors(404, 422)
    )
    def encode(name: str, body: s.EncodeRequest) -> s.EncodeResponse:
        """The image's code and reconstruction; for a conditional run also its code decoded
        with every class label (`analogies`), and an m2's classifier's prediction."""
        run = find(name)
        refuse_completion(run)
        x = read_data_url(body.image, run.config.model.data_shape)  # (C, H, W) in [0, 1]
        low, high = run.data_range
        x = (low + x * (high - low))[None]  # (1, C, H, W) in data space
        prediction = predict(run, x) if run.classifier else None
        label = body.label
        if label is None and prediction is not None:
            label = prediction.label  # an m2 encodes with its classifier's most probable class
        label = checked_label(run, label)
        y = None if label is None else torch.tensor([label])
        z = run.encode(x, y)  # (1, D)
        analogies = None
        if label is not None:
            every = torch.arange(run.classes)  # (K,) decode(z, k) for every class k
            analogies = images(run, z.expand(run.classes, -1), every)
        return s.EncodeResponse(
            z=z[0].tolist(),
            point=run.plane.project(z)[0].tolist(),
            reconstruction=images(run, z, y)[0],
            label=label,
            analogies=analogies,
            prediction=prediction,
        )

    @app.post(
        "/api/runs/{name}/sample", response_model=s.ImagesResponse, responses=errors(404, 422)
    )
    def sample(name: str, body: s.SampleRequest) -> s.ImagesResponse:
        run = find(name)
        y = decode_labels(run, body.label, body.n)
        generator = torch.Generator().manual_seed(body.seed)
        # N(0, I) for a VAE, an autoencoder's mixture, a VQ-VAE's PixelCNN, a cvae's p(z|y)
        with run.lock:
            try:
                z = draw_codes(
                    run.model,
                    run.mixture,
                    body.n,
                    y=y,
                    generator=generator,
                    temperature=body.temperature,
                )
            except ValueError as error:
                raise HTTPException(422, f"run {name}: {error}") from None
        return s.ImagesResponse(images=images(run, z, y), z=z.tolist())

    @app.post(
        "/api/runs/{name}/interpolate",
        response_model=s.InterpolateResponse,
        responses=errors(404, 422),
    )
    def interpolate(name: str, body: s.InterpolateRequest) -> s.InterpolateResponse:
        run = find(name)
        y = decode_labels(run, body.label, body.steps)
        if body.from_index is not None and body.to_index is not None:
            ends = run.codes[
                [
                    test_index(run, body.from_index, "from_index"),
                    test_index(run, body.to_index, "to_index"),
                ]
            ]
        else:
            ends = _rows([body.z_a or [], body.z_b or []], "z_a/z_b", run.latent_dim, 2)
        t = torch.linspace(0.0, 1.0, body.steps)
        if body.spherical:
            if _opposite(ends[0], ends[1]):
                raise HTTPException(
                    422,
                    "spherical interpolation between opposite codes is "
                    "undefined; use spherical=false",
                )
            z = slerp(ends[0], ends[1], t)
        else:
            z = torch.lerp(ends[0], ends[1], t[:, None])  # (steps, D)
        return s.InterpolateResponse(
            images=images(run, z, y), z=z.tolist(), points=run.plane.project(z).tolist()
        )

    @app.get(
        "/api/runs/{name}/test_image/{index}",
        response_model=s.ExampleImageResponse,
        responses=errors(404, 422),
    )
    def test_image(name: str, index: int = PathParam(ge=0)) -> s.ExampleImageResponse:
        run = find(name)
        return example(run, test_index(run, index, "index"))
