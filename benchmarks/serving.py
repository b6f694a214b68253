"""What the serving benchmarks share: a small run to serve, `vaelab serve` started in a
subprocess on a free loopback port, and the costliest uploads the server accepts."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

import vaelab


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


@contextmanager
def running_server(
    runs: Path | list[Path] | None, threads: int, options: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """`vaelab serve` of `runs` (default: a freshly trained MLP VAE), with `options`, in a
    subprocess with `threads` torch threads: (the process, its base URL, the first run's name),
    until the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = runs or train_mlp_vae(Path(tmp) / "mlp-vae")
        folders = [str(run) for run in (runs if isinstance(runs, list) else [runs])]
        port = free_port()
        command = [sys.executable, "-m", "vaelab", "serve", *folders, "--port", str(port)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's threads
        log = Path(tmp) / "server.log"  # its messages, shown when it does not start
        with log.open("w") as err:
            server = subprocess.Popen(
                [*command, "--device", "cpu", "-q", *(options or [])], env=env, stderr=err
            )
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                name = wait_until_up(base, server)
            except SystemExit:
                print(log.read_text(), file=sys.stderr)
                raise
            yield server, base, name
        finally:
            server.terminate()
            server.wait(timeout=10)


def data_url(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def largest_uploads() -> dict[str, str]:
    """The two costliest accepted uploads, as data URLs under 1 MB."""
    rng = np.random.default_rng(0)
    # blocks of noise: every pixel decoded, and the file still compresses under the limit
    blocks = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba = Image.fromarray(blocks, "RGBA").resize((1024, 1024), Image.Resampling.NEAREST)
    photo = Image.new("RGB", (6000, 6000), "white")  # a photo of a digit drawn on paper
    ImageDraw.Draw(photo).ellipse((1800, 1000, 4200, 5000), outline="black", width=450)
    uploads = {
        "png 1024x1024 RGBA": data_url(rgba, "PNG"),
        "jpeg 6000x6000": data_url(photo, "JPEG"),
    }
    for name, url in uploads.items():
        if len(url) > 1_000_000:
            raise SystemExit(f"{name} is {len(url):,} bytes as a data URL, over the limit")
    return uploads
