"""`vaelab serve` as a real server on a socket: the port bound before the runs load, read
deadlines for clients that never finish a request, a cap on connections, a warning beyond
loopback."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaelab import RunConfig, VaelabError, train

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from vaelab.explorer.server import bind, is_loopback, serve  # noqa: E402

READ_TIMEOUT = 2.0
MAX_CONNECTIONS = 3
SERVER = """
import sys, torch
torch.set_num_threads(1)
from vaelab.explorer.server import serve
serve([sys.argv[1]], port=int(sys.argv[2]), device="cpu", read_timeout=float(sys.argv[3]),
      max_connections=int(sys.argv[4]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = RunConfig.from_dict(
        {
            "model": {"latent_dim": 2, "hidden_dims": [16]},
            "data": {"dataset": "digits"},
            "train": {"epochs": 1, "device": "cpu"},
        }
    )
    folder = tmp_path_factory.mktemp("serve") / "vae"
    train(config, folder, progress=False)
    return folder


def _request(port: int, raw: bytes, *, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


GET_RUNS = b"GET /api/runs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[int]:
    port = _free_port()
    args = [str(run), str(port), str(READ_TIMEOUT), str(MAX_CONNECTIONS)]
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _request(port, GET_RUNS).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"the server did not start: {process.stderr}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closed `s` (recv returns b"") within `seconds`."""
    s.settimeout(seconds)
    try:
        return s.recv(1024) == b""
    except TimeoutError:
        return False


def test_unfinished_headers_are_cut_off_at_the_read_deadline(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(b"GET /api/runs HTTP/1.1\r\nHost: localhost\r\n")  # never the blank line
        started = time.monotonic()
        assert _closed_within(s, READ_TIMEOUT + 5)
        assert time.monotonic() - started >= READ_TIMEOUT - 0.5


def test_an_unfinished_body_is_cut_off_at_the_read_deadline(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(
            b"POST /api/runs/vae/decode HTTP/1.1\r\nHost: localhost\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"z": '
        )
        assert _closed_within(s, READ_TIMEOUT + 5)


def test_a_silent_connection_is_closed_too(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as s:
        assert _closed_within(s, READ_TIMEOUT + 5)


def test_connections_beyond_the_cap_get_503_then_serving_resumes(server: int) -> None:
    held = [socket.create_connection(("127.0.0.1", server)) for _ in range(MAX_CONNECTIONS)]
    try:
        for s in held:
            s.sendall(b"GET /api/runs HTTP/1.1\r\n")  # unfinished: each holds its connection
        time.sleep(0.3)
        assert _request(server, GET_RUNS).startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert _request(server, GET_RUNS).startswith(b"HTTP/1.1 200")


def test_whole_requests_are_answered_with_security_headers(server: int) -> None:
    answer = _request(server, GET_RUNS)
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"x-content-type-options: nosniff" in head
    assert b"content-security-policy:" in head


def test_a_busy_port_is_a_one_line_error_before_the_runs_load(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(VaelabError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind("127.0.0.1", port)
        # the missing run would be the error if loading came first
        with pytest.raises(VaelabError, match="already in use"):
            serve([tmp_path / "no-such-run"], port=port)


def test_the_cli_says_so_at_once(run: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "vaelab", "serve", str(run), "--port", str(port)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], done.stderr
    assert "vaelab explorer at" not in done.stdout  # no URL announced for a port not ours
    assert time.monotonic() - started < 60


def test_binding_beyond_loopback_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vaelab")
    with pytest.raises(VaelabError):  # the run is missing: after the bind and the warning
        serve([tmp_path / "no-such-run"], host="0.0.0.0", port=0)
    assert any("beyond this machine" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with pytest.raises(VaelabError):
        serve([tmp_path / "no-such-run"], host="127.0.0.1", port=0)
    assert not any("beyond this machine" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("lab.lan", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("name", ["", "http://lab.lan/"])
def test_a_bad_allowed_host_is_a_one_line_error(run: Path, name: str, capsys) -> None:
    from tests.test_cli import run_cli

    code, _, err = run_cli(capsys, "serve", run, "--allowed-host", name, "--port", "1")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--allowed-host" in err
