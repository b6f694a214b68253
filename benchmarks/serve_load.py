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
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import vaelab

SERVER = """
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from vaelab.explorer import serve
serve([sys.argv[1]], port=int(sys.argv[2]), device="cpu")
"""


def train_mlp_vae(folder: Path) -> Path:
    dataset = "mnist" if os.environ.get("VAELAB_DATA") else "digits"
    config = vaelab.RunConfig.from_dict(
        {
            "model": {
                "model": "vae",
                "latent_dim": 20,
                "hidden_dims": [400],
                "architecture": "mlp",
            },
            "data": {"dataset": dataset},
            "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        }
    )
    print(f"training a {dataset} MLP VAE (latent 20, hidden 400) for one epoch ...", flush=True)
    vaelab.train(config, folder, progress=False)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 120.0) -> str:
    """The first run's name, once the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            return httpx.get(f"{url}/api/runs", timeout=1.0).json()["runs"][0]["name"]
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


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
    from serve_memory import largest_uploads

    upload = largest_uploads()["png 1024x1024 RGBA"]
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_mlp_vae(Path(tmp) / "mlp-vae")
        port = free_port()
        cmd = [sys.executable, "-c", SERVER, str(run), str(port), str(args.threads)]
        server = subprocess.Popen(cmd)
        try:
            base = f"http://127.0.0.1:{port}"
            name = wait_until_up(base, server)
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
        finally:
            server.terminate()
            server.wait(timeout=10)
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
