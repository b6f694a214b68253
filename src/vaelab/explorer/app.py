"""The explorer's web app: FastAPI over loaded runs (`server.serve` runs it).

Runs are chosen only from those given at start-up, by name: no part of a request reaches the
file system except the static page files. Every input is validated (see `schemas`), so bad
requests get a 4xx with a one-line message and the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

from vaelab.explorer.api import add_routes
from vaelab.explorer.guards import LOOPBACK_HOSTS, BodyLimit, HostAllowList, SecurityHeaders
from vaelab.explorer.runs import BadInput, load_served_run, run_names
from vaelab.training.runs import resolve_device

STATIC = Path(__file__).parent / "static"
PLACEHOLDER = "<!doctype html><title>vaelab explorer</title><p>The explorer page is missing."


def _validation_message(error: RequestValidationError) -> str:
    """The first problem as one line, e.g. "body.z.0.1: Input should be less than or equal
    to 1000", with a count of the others."""
    problems = error.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = " ".join(str(first.get("msg", "invalid value")).split())
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{where}: {message}{more}"[:500]


def create_app(
    run_paths: dict[str, Path] | list[Path],
    *,
    device: str | torch.device = "cpu",
    max_request_bytes: int = 1_000_000,
    max_batch: int = 256,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    browser_decoding: bool = True,
) -> FastAPI:
    """The explorer app over the run folders `run_paths` (a list named by folder, or a dict of
    names to folders), each loaded once now on `device`, with its decoder for the page unless
    `browser_decoding` is False (see `browser_decoder`). It answers requests whose Host header
    names one of `allowed_hosts` (ports aside), and adds security headers to every response."""
    if isinstance(run_paths, dict):
        named = {str(k): Path(v) for k, v in run_paths.items()}
    else:
        paths = [Path(p) for p in run_paths]
        named = dict(zip(run_names(paths), paths, strict=True))
    if not named:
        raise ValueError("create_app needs at least one run folder")
    if max_request_bytes < 1 or max_batch < 1:
        raise ValueError("max_request_bytes and max_batch must be positive")
    device = resolve_device(str(device))  # "auto" too
    runs = {
        name: load_served_run(name, path, device=device, browser_decoding=browser_decoding)
        for name, path in named.items()
    }
    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, blank offline;
    # /openapi.json describes the API
    app = FastAPI(
        title="vaelab explorer",
        summary="Encode, decode, sample and interpolate",
        docs_url=None,
        redoc_url=None,
    )
    # the last added runs first: the Host check, then the body limit, then the app; the
    # security headers go on every answer, refusals included
    app.add_middleware(BodyLimit, limit=max_request_bytes)
    app.add_middleware(HostAllowList, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    @app.exception_handler(BadInput)
    async def _bad(request: Request, error: BadInput) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> Any:
        page = STATIC / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(PLACEHOLDER)

    add_routes(app, runs, max_batch=max_batch)
    app.state.runs = runs
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema with only the errors it returns: FastAPI adds a 422 of its
    own validation-error shape to every route with parameters, but this app answers every
    validation error as an `ErrorDetail`, and the routes that can declare their 422."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for operations in schema["paths"].values():
            for operation in operations.values():
                entry = operation["responses"].get("422", {})
                if "HTTPValidationError" in json.dumps(entry):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
