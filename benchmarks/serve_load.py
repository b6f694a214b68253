"""Latency of `vaelab serve` under load: N concurrent clients send single-z decode requests for
a fixed time over loopback; prints p50/p95/p99 latency (ms) and requests/s. Beside them,
--uploaders clients send the largest uploads the server accepts (see serve_memory.py) and
--slow-clients connections trickle a request's headers a byte at a time (the server cuts each
at its read deadline; they reconnect), so the figures include what those cost the others.

The server runs in a subprocess on 127.0.0.1 and a free port. Without --run, the classic MNIST
MLP VAE (784-400-20, Kingma & Welling 2014) is trained for one epoch first, on MNIST from
$VAELAB_DATA, or on the built-in `digits` (64-400-20) when that is unset.

    VAELAB_DATA=../shared/data python benchmarks/serve_load.py [--run RUN] [--clients 4]
        [--seconds 10] [--threads 1] [--uploaders 1] [--slow-clients 8]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
from serving import largest_uploads, running_server


def client_loop(url: str, dim: int, until: float, seed: int, out: list[float], errors: list[int]):
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10.0) as client:
        while time.monotonic() < until:
            body = {"z": [[rng.gauss(0.0, 1.0) for _ in range(dim)]]}
            start = time.perf_counter()
            response = client.post("/decode", json=body)
            elapsed = time.perf_counter() - start
            if response.status_code == 200:
                out.append(elapsed * 1e3)
            else:
                errors.append(response.status_code)


def upload_loop(url: str, image: str, until: float, out: list[float], errors: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=60.0) as client:
        while time.monotonic() < until:
            start = time.perf_counter()
            response = client.post("/encode", json={"image": image})
            if response.status_code == 200:
                out.append((time.perf_counter() - start) * 1e3)
            else:
                errors.append(response.status_code)


def slow_loop(port: int, until: float, cut: list[float]) -> None:
    """Send a request's headers a byte every 0.2 s; count the connections the server cut."""
    request = b"GET /api/runs HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    while time.monotonic() < until:
        opened = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for byte in request:
                    if time.monotonic() >= until:
                        return
                    s.sendall(bytes([byte]))
                    time.sleep(0.2)
        except OSError:  # cut off by the server's read deadline
            cut.append(time.monotonic() - opened)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run folder (default: train an MLP VAE first)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--uploaders", type=int, default=1, help="clients sending uploads")
    parser.add_argument("--slow-clients", type=int, default=8, help="slow-header connections")
    args = parser.parse_args()
    upload = largest_uploads()["png 1024x1024 RGBA"]
    with running_server(args.run, args.threads) as (_, base, name):
        port = int(base.rsplit(":", 1)[1])
        info = httpx.get(f"{base}/api/runs").json()["runs"][0]
        url = f"{base}/api/runs/{name}"
        client_loop(url, info["latent_dim"], time.monotonic() + 1.0, 0, [], [])  # warm-up
        latencies: list[float] = []
        errors: list[int] = []
        uploads: list[float] = []
        cut: list[float] = []
        until = time.monotonic() + args.seconds
        threads = [
            threading.Thread(
                target=client_loop,
                args=(url, info["latent_dim"], until, k + 1, latencies, errors),
            )
            for k in range(args.clients)
        ]
        threads += [
            threading.Thread(target=upload_loop, args=(url, upload, until, uploads, errors))
            for _ in range(args.uploaders)
        ]
        threads += [
            threading.Thread(target=slow_loop, args=(port, until, cut))
            for _ in range(args.slow_clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
    if len(latencies) < 2:
        raise SystemExit(f"too few successful requests ({len(latencies)}; errors: {errors[:5]})")
    shape = f"{info['channels']}x{info['height']}x{info['width']}"
    print(
        f"run {name} ({info['model']}, D={info['latent_dim']}, {shape}); "
        f"{args.clients} clients for {args.seconds:g} s; torch threads {args.threads}"
    )
    print(
        f"beside them: {args.uploaders} uploader(s), {len(uploads)} 1024x1024 uploads answered"
        + (f" (median {statistics.median(uploads):.0f} ms)" if uploads else "")
        + f"; {args.slow_clients} slow client(s), {len(cut)} connections cut at the deadline"
        + (f" (after {statistics.median(cut):.1f} s)" if cut else "")
    )
    print(
        f"requests {len(latencies)}  errors {len(errors)}  "
        f"throughput {len(latencies) / wall:.0f} req/s"
    )
    print(
        f"latency ms  p50 {percentile(latencies, 50):.2f}  p95 {percentile(latencies, 95):.2f}"
        f"  p99 {percentile(latencies, 99):.2f}"
    )


if __name__ == "__main__":
    main()
