"""The explorer's web server: a FastAPI app over loaded runs, and `serve` to run it.

Runs are chosen only from those given at start-up, by name: no part of a request reaches the
file system except the static page files. Every input is validated (see `schemas`), so bad
requests get a 4xx with a one-line message and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

from vaelab.explorer.api import add_routes
from vaelab.explorer.runs import BadInput, load_served_run, run_names
from vaelab.training.runs import resolve_device

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PLACEHOLDER = "<!doctype html><title>vaelab explorer</title><p>The explorer page is missing."
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, by its Content-Length and by the
    bytes actually received (so a lying or missing Content-Length is caught too)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"0").decode("latin-1").strip()
        if not declared.isdigit():
            return await _reply(send, 400, "Content-Length is not a number")
        if int(declared) > self.limit:
            return await _reply(send, 413, _TooLarge(self.limit).detail)
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge(self.limit)  # FastAPI re-raises HTTPExceptions from body reads
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge as error:  # raised where no handler turned it into a response
            if started:
                raise
            await _reply(send, 413, error.detail)


async def _reply(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
) -> FastAPI:
    """The explorer app over the run folders `run_paths` (a list named by folder, or a dict of
    names to folders), each loaded once now on `device`."""
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
    runs = {name: load_served_run(name, path, device=device) for name, path in named.items()}
    app = FastAPI(title="vaelab explorer", summary="Encode, decode, sample and interpolate")
    app.add_middleware(BodyLimit, limit=max_request_bytes)

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
    return app


def serve(
    run_paths: dict[str, Path] | list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_request_bytes: int = 1_000_000,
    max_batch: int = 256,
) -> None:
    """Load the runs and serve the explorer with uvicorn until interrupted (for `vaelab serve`).

    Bound to loopback by default: pass host="0.0.0.0" only on a network you trust.
    """
    import uvicorn

    app = create_app(
        run_paths, device=device, max_request_bytes=max_request_bytes, max_batch=max_batch
    )
    shown = f"[{host}]" if ":" in host else host
    log.info("vaelab explorer at http://%s:%d/", shown, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
