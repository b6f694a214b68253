"""ASGI middleware that guards the explorer's server: a body-size limit, a Host-header
allow-list (against DNS rebinding) and the usual security headers.

Each refusal is a JSON `{"detail": "..."}` with one line, like every other error of the API.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# What the page needs and nothing more: its own scripts and styles, images drawn from data: and
# blob: URLs, requests to its own origin; no framing by other sites, no plugins, no forms
# posted elsewhere. 'wasm-unsafe-eval' lets the page compile WebAssembly (a decoder run in the
# browser), which is not script evaluation.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self' 'wasm-unsafe-eval'; "
    "style-src 'self'; connect-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
)


async def reply(send: Send, status: int, detail: str) -> None:
    """Send a JSON error response {"detail": detail} with `status`, security headers included
    (a refusal is answered before the app, outside `SecurityHeaders`)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """413 for a body over `limit` bytes, by its Content-Length and by the bytes actually
    received (so a lying or missing Content-Length is caught too)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"0").decode("latin-1").strip()
        if not declared.isdigit():
            return await reply(send, 400, "Content-Length is not a number")
        if int(declared) > self.limit:
            return await reply(send, 413, _TooLarge(self.limit).detail)
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
            await reply(send, 413, error.detail)


def host_name(header: str) -> str:
    """The host of a Host header, lower case, without its port: "[::1]:8000" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostAllowList:
    """400 for a request whose Host header names none of `allowed` hosts (ports aside).

    A page on another site can reach a server on this machine through a name it controls that
    resolves here (DNS rebinding); the browser then sends that name as Host, which this refuses.
    Starlette's TrustedHostMiddleware does the same check but answers in plain text; this one
    answers as the rest of the API does.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.allowed:
            shown = host[:100] or "(none)"
            return await reply(
                send,
                400,
                f"Host header {shown!r} is not one this server answers to; start vaelab "
                f"serve with --allowed-host {shown} to allow it",
            )
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Add `SECURITY_HEADERS` to every response (nosniff, no framing, a content policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
