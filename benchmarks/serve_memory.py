"""Memory of `vaelab serve` under the costliest uploads it accepts: --uploads encode requests,
from --clients concurrent clients, of images at the size limit; prints the server's resident
memory (VmRSS, Linux) before, at its peak and after, and the uploads' median latency.

The images, each under the 1 MB request limit: a 1024x1024 RGBA PNG (the most pixels decoded;
4 MB as RGBA) and a 6000x6000 JPEG (reduced 8x while it is decoded, to 750x750). A 4096x4096
PNG, which the issue measured at about 300 MB a request, is refused before it is decoded.

    VAELAB_DATA=../shared/data python benchmarks/serve_memory.py [--run RUN] [--uploads 1000]
        [--clients 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from serving import largest_uploads, running_server


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (from /proc: Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc: this benchmark needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run folder (default: train an MLP VAE first)")
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()
    uploads = largest_uploads()
    with running_server(args.run, args.threads) as (server, base, name):
        url = f"{base}/api/runs/{name}/encode"
        for image in uploads.values():  # warm-up: every code path once
            response = httpx.post(url, json={"image": image}, timeout=60)
            if response.status_code != 200:
                raise SystemExit(f"an upload was refused: {response.text}")
        before = rss_mb(server.pid)
        peak, statuses, seconds = before, [], []
        images = list(uploads.values())
        left = iter(range(args.uploads))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(timeout=120) as http:
                while True:
                    with lock:
                        k = next(left, None)
                    if k is None:
                        return
                    started = time.perf_counter()
                    response = http.post(url, json={"image": images[k % len(images)]})
                    with lock:
                        statuses.append(response.status_code)
                        seconds.append(time.perf_counter() - started)

        def watch() -> None:
            nonlocal peak
            while any(t.is_alive() for t in clients):
                peak = max(peak, rss_mb(server.pid))
                time.sleep(0.05)

        clients = [threading.Thread(target=client) for _ in range(args.clients)]
        watcher = threading.Thread(target=watch)
        started = time.monotonic()
        for thread in clients:
            thread.start()
        watcher.start()
        for thread in [*clients, watcher]:
            thread.join()
        wall = time.monotonic() - started
        time.sleep(1.0)
        after = rss_mb(server.pid)
    refused = sum(status != 200 for status in statuses)
    print(
        f"{len(statuses)} uploads ({', '.join(uploads)}, alternately) from {args.clients} "
        f"clients in {wall:.1f} s; {refused} not answered 200"
    )
    print(f"upload latency: median {1e3 * float(np.median(seconds)):.0f} ms")
    print(
        f"server memory MB: before {before:.1f}  peak {peak:.1f}  after {after:.1f}  "
        f"after - before {after - before:+.1f}"
    )


if __name__ == "__main__":
    main()
