"""Latency of the explorer page, in headless Chromium: from a pointer event on the latent map to
the decoded image drawn (`performance.now()` minus the event's timeStamp, measured by the page
itself), for the page decoding in the browser (onnxruntime-web) and, in the same run, with
`--server-decoding` (a round trip per move). Prints p50/p95 per setting.

Settings: the MNIST MLP VAE (784-400-20, Kingma & Welling 2014) alone; a conv VAE alone (the
default conv architecture, 20 latent units); and the two side by side, linked, where one
pointer event decodes in both panels and its latency is the slower panel's. The runs are
trained for one epoch first (on MNIST from $VAELAB_DATA, else on the built-in 8x8 digits);
--mlp and --conv take trained runs instead.

Moves are sent every --interval ms (a mouse reports at about 60 Hz: 16 ms), --moves of them
per setting; a move that arrives while a decode is drawing replaces the one waiting (the
latest wins), so only drawn moves are timed.

    VAELAB_DATA=../shared/data python benchmarks/explorer_latency.py [--moves 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from serving import running_server

import vaelab

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def train_run(folder: Path, architecture: str) -> Path:
    dataset = "mnist" if os.environ.get("VAELAB_DATA") else "digits"
    model = {"model": "vae", "latent_dim": 20, "architecture": architecture}
    if architecture == "mlp":
        model["hidden_dims"] = [400]
    config = vaelab.RunConfig.from_dict(
        {
            "model": model,
            "data": {"dataset": dataset, "val_fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        }
    )
    print(f"training a {dataset} {architecture} VAE for one epoch ...", flush=True)
    vaelab.train(config, folder, progress=False)
    return folder


def measure(browser, url: str, moves: int, interval_ms: float) -> tuple[list[float], int, str]:
    """Latencies (ms) of the drawn moves (the slower panel's per move), how many were drawn,
    and where the first panel decoded."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=120_000)
    decoding = page.locator(".panel").first.get_attribute("data-decoding") or "?"
    box = page.locator(".panel .map").first.bounding_box()
    assert box is not None
    rng = random.Random(0)
    for warm in range(20):  # first decodes compile and allocate
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.03 * warm), box["y"] + box["height"] / 2)
        time.sleep(interval_ms / 1000)
    time.sleep(0.5)
    page.evaluate("() => { window.vaelabLatencies = []; }")
    for _ in range(moves):
        x = box["x"] + box["width"] * rng.uniform(0.1, 0.9)
        y = box["y"] + box["height"] * rng.uniform(0.1, 0.9)
        page.mouse.move(x, y)
        time.sleep(interval_ms / 1000)
    time.sleep(1.0)
    entries = page.evaluate("() => window.vaelabLatencies")
    page.close()
    slowest: dict[float, float] = {}
    for entry in entries:
        slowest[entry["event"]] = max(slowest.get(entry["event"], 0.0), entry["ms"])
    return list(slowest.values()), len(slowest), decoding


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", type=Path, help="a trained MLP VAE run (default: train one)")
    parser.add_argument("--conv", type=Path, help="a trained conv VAE run (default: train one)")
    parser.add_argument("--moves", type=int, default=300)
    parser.add_argument("--interval", type=float, default=16.0, help="ms between moves")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mlp = args.mlp or train_run(Path(tmp) / "mlp-vae", "mlp")
        conv = args.conv or train_run(Path(tmp) / "conv-vae", "conv")
        settings = {"MLP VAE": [mlp], "conv VAE": [conv], "MLP + conv, linked": [mlp, conv]}
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for title, runs in settings.items():
                for server_decoding in (False, True):
                    extra = ["--server-decoding"] if server_decoding else []
                    with running_server(runs, args.threads, extra) as (_, url, _name):
                        latencies, drawn, where = measure(browser, url, args.moves, args.interval)
                    rows.append((title, where, drawn, latencies))
                    print(
                        f"{title:20s} decoded by the {where:7s}: {drawn:4d} of {args.moves} moves "
                        f"drawn, p50 {percentile(latencies, 50):6.2f} ms, "
                        f"p95 {percentile(latencies, 95):6.2f} ms",
                        flush=True,
                    )
            browser.close()


if __name__ == "__main__":
    main()
