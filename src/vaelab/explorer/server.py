"""Serving the explorer with uvicorn: the port bound before the runs load, read deadlines for
requests, a cap on connections, and the hosts the server answers to.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from vaelab.errors import VaelabError
from vaelab.explorer.guards import LOOPBACK_HOSTS

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0  # seconds a client has to send a whole request (headers and body)
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open
MAX_CONNECTIONS = 64  # connections and requests in progress; beyond them, 503


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a read deadline: a connection whose client has not sent
    a whole request (headers and body) `read_timeout` seconds after the connection opened, or
    after the previous response, is closed. uvicorn's own keep-alive timeout only covers the
    wait between requests, so a client that never finishes its headers or its body would
    otherwise hold the connection for ever."""

    read_timeout = READ_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.read_timeout, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        # IDLE: the request's headers are incomplete (or none came); SEND_BODY: its body is.
        # DONE: the whole request arrived and the app is answering it, which may take longer.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's receive() returns a disconnect
            self.transport.close()


def timed_protocol(read_timeout: float) -> type[TimedH11Protocol]:
    """`TimedH11Protocol` with its deadline set to `read_timeout` seconds."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"read_timeout": read_timeout})


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name to bind) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a one-line VaelabError (the port is taken, the
    address is not this machine's...). Bound before anything slow, so a busy port is said at
    once and the URL printed afterwards is this server's."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise VaelabError(f"cannot listen on {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows this would let two servers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise VaelabError(
                f"port {port} on {host} is already in use: stop what holds it or choose "
                "another with --port"
            ) from None
        raise VaelabError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host headers a server bound to `host` answers to: loopback names, the bound address
    (unless it is a wildcard), and `extra`."""
    wildcard = host in ("0.0.0.0", "::", "")
    return [*LOOPBACK_HOSTS, *([] if wildcard else [host]), *extra]


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def return_freed_memory() -> None:
    """Make glibc's malloc hand large freed blocks back to the system (Linux; elsewhere
    nothing). By default glibc raises its mmap threshold each time a large block is freed, up
    to 32 MB, so the buffers of a burst of uploads (each a few MB) end up in the heap and stay
    there: 1,000 uploads from 8 clients held 55 MB more afterwards. A fixed threshold
    (mallopt(3) M_MMAP_THRESHOLD) keeps them mmap'd, returned when freed (+3 MB; see
    benchmarks/serve_memory.py)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # glibc's own initial value, now fixed


def serve(
    run_paths: dict[str, Path] | list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_request_bytes: int = 1_000_000,
    max_batch: int = 256,
    allowed_host: Iterable[str] = (),
    read_timeout: float = READ_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    browser_decoding: bool = True,
) -> None:
    """Bind host:port, load the runs and serve the explorer until interrupted (for `vaelab
    serve`). Bound to loopback by default; beyond it, a warning is logged, and the page is
    answered only for the Host names in `allowed_host` (and the bound address)."""
    import uvicorn

    from vaelab.explorer.app import create_app

    if read_timeout <= 0 or max_connections < 1:
        raise VaelabError("read_timeout and max_connections must be positive")
    sock = bind(host, port)
    return_freed_memory()
    try:
        if not is_loopback(host):
            log.warning(
                "vaelab explorer is listening on %s, beyond this machine: anyone who can reach "
                "it can use the runs it serves. Bind to 127.0.0.1 unless the network is yours.",
                host,
            )
        app = create_app(
            run_paths,
            device=device,
            max_request_bytes=max_request_bytes,
            max_batch=max_batch,
            allowed_hosts=allowed_hosts(host, allowed_host),
            browser_decoding=browser_decoding,
        )
        for run in app.state.runs.values():
            log.info("%s: %s", run.name, run.browser.note)
        config = uvicorn.Config(
            app,
            http=timed_protocol(read_timeout),
            log_level="warning",
            timeout_keep_alive=KEEP_ALIVE,
            limit_concurrency=max_connections,
        )
        log.info("vaelab explorer at %s", url(host, port))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
