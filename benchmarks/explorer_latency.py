"""Latency of the explorer page, in headless Chromium: from a pointer event on the latent map to
the decoded image drawn (`performance.now()` minus the event's timeStamp, measured by the page
itself), for the page decoding in the browser (onnxruntime-web) and, in the same run, with
`--server-decoding` (a round trip per move). Prints p50/p95 per setting.

Settings: the MNIST MLP VAE (784-400-20, Kingma & Welling 2014) alone; a conv VAE alone (the
default conv architecture, 20 latent units); and the two side by side, linked, where one
pointer event decodes in both panels and its latency is the slower panel's. The runs are
trained for one epoch first (on MNIST from $VAELAB_DATA, else on the built-in 8x8 digits);
--mlp and --conv take trained runs instead.

Moves are sent every --interval ms (a mouse reports at about 60 Hz: 16 ms), --moves of them,
--repeats times per setting (pooled; each repeat's p95 is printed too, as the spread on a shared
machine is wide); a move that arrives while a decode is drawing replaces the one waiting (the
latest wins), so only drawn moves are timed. Each latency is split into the wait before the
page's first listener runs (the browser delivering the event; taken by a capture listener on
the window) and the page's own share (listener to pixels drawn). The floor is the first part
alone on an empty page from the same server: what the browser and the driver cost with no
page work at all. On Linux each setting also prints the CPU time all Chromium's processes spent
per move (from /proc): the page's work, which a busy host moves far less than it moves latency.

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


# Before the page's own listeners: when the browser delivered each pointer event.
DELIVERED = """() => {
  window.benchDelivered = new Map();
  const kind = "onpointerrawupdate" in window ? "pointerrawupdate" : "pointermove";
  window.addEventListener(kind, (e) => {
    window.benchDelivered.set(e.timeStamp, performance.now() - e.timeStamp);
  }, { capture: true });
}"""


def browser_cpu_seconds() -> float | None:
    """CPU seconds used so far by every Chromium process alive (Linux's /proc; None elsewhere):
    a measure of the page's work that a noisy host does not move the way it moves latency."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    ticks = 0
    for folder in proc.iterdir():
        try:
            if not folder.name.isdigit() or "chrom" not in (folder / "comm").read_text():
                continue
            fields = (folder / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:  # the process ended meanwhile
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_per_move(before: float | None, moves: int) -> float | None:
    """ms of Chromium CPU per move since `before`."""
    after = browser_cpu_seconds()
    return None if before is None or after is None else 1000 * (after - before) / moves


def move_randomly(page, box: dict, moves: int, interval_ms: float, rng: random.Random) -> None:
    for _ in range(moves):
        x = box["x"] + box["width"] * rng.uniform(0.1, 0.9)
        y = box["y"] + box["height"] * rng.uniform(0.1, 0.9)
        page.mouse.move(x, y)
        time.sleep(interval_ms / 1000)
    time.sleep(1.0)


def measure(browser, url: str, args: argparse.Namespace) -> dict:
    """Latencies (ms) of the drawn moves (the slower panel's per move), the browser's share
    of each, each repeat's p95, and where the first panel decoded."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=120_000)
    decoding = page.locator(".panel").first.get_attribute("data-decoding") or "?"
    box = page.locator(".panel .map").first.bounding_box()
    assert box is not None
    page.evaluate(DELIVERED)
    rng = random.Random(0)
    move_randomly(page, box, 50, args.interval, rng)  # first decodes compile and allocate
    latencies, delivery, repeats = [], [], []
    cpu_before = browser_cpu_seconds()
    for _ in range(args.repeats):
        page.evaluate("() => { window.vaelabLatencies = []; window.benchDelivered.clear(); }")
        move_randomly(page, box, args.moves, args.interval, rng)
        entries = page.evaluate("() => window.vaelabLatencies")
        delivered = dict(page.evaluate("() => [...window.benchDelivered]"))
        slowest: dict[float, float] = {}
        for entry in entries:
            slowest[entry["event"]] = max(slowest.get(entry["event"], 0.0), entry["ms"])
        latencies += slowest.values()
        delivery += [delivered[event] for event in slowest if event in delivered]
        repeats.append(percentile(list(slowest.values()), 95))
    cpu = cpu_per_move(cpu_before, args.moves * args.repeats)  # before the page's process ends
    page.close()
    return {
        "latencies": latencies,
        "delivery": delivery,
        "repeats": repeats,
        "where": decoding,
        "cpu": cpu,
    }


def floor(browser, url: str, args: argparse.Namespace) -> tuple[list[float], float | None]:
    """The delivery of pointer events to an empty page of the same origin (so that it has the
    same event: pointerrawupdate needs a secure context), in ms, and Chromium's CPU per move."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(f"{url}/api/runs")  # any page of the origin; its body is replaced
    page.set_content("<body style='margin:0'><div style='width:600px;height:600px'></div></body>")
    page.evaluate(DELIVERED)
    rng = random.Random(0)
    box = {"x": 0, "y": 0, "width": 600, "height": 600}
    move_randomly(page, box, 50, args.interval, rng)
    page.evaluate("() => window.benchDelivered.clear()")
    cpu_before = browser_cpu_seconds()
    move_randomly(page, box, args.moves * args.repeats, args.interval, rng)
    cpu = cpu_per_move(cpu_before, args.moves * args.repeats)
    values = page.evaluate("() => [...window.benchDelivered.values()]")
    page.close()
    return values, cpu


def cpu_text(cpu: float | None) -> str:
    return "" if cpu is None else f"; Chromium CPU {cpu:.1f} ms a move"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", type=Path, help="a trained MLP VAE run (default: train one)")
    parser.add_argument("--conv", type=Path, help="a trained conv VAE run (default: train one)")
    parser.add_argument("--moves", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="blocks of --moves per setting")
    parser.add_argument("--interval", type=float, default=16.0, help="ms between moves")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mlp = args.mlp or train_run(Path(tmp) / "mlp-vae", "mlp")
        conv = args.conv or train_run(Path(tmp) / "conv-vae", "conv")
        settings = {"MLP VAE": [mlp], "conv VAE": [conv], "MLP + conv, linked": [mlp, conv]}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            with running_server([mlp], args.threads, []) as (_, url, _name):
                empty, cpu = floor(browser, url, args)
            print(
                f"{'empty page (floor)':20s} event delivered in        p50 "
                f"{percentile(empty, 50):6.2f} ms, p95 {percentile(empty, 95):6.2f} ms"
                f"{cpu_text(cpu)}",
                flush=True,
            )
            for title, runs in settings.items():
                for server_decoding in (False, True):
                    extra = ["--server-decoding"] if server_decoding else []
                    with running_server(runs, args.threads, extra) as (_, url, _name):
                        m = measure(browser, url, args)
                    lat, dl = m["latencies"], m["delivery"]
                    print(
                        f"{title:20s} decoded by the {m['where']:7s}: {len(lat):4d} of "
                        f"{args.moves * args.repeats} moves drawn, p50 {percentile(lat, 50):6.2f} "
                        f"ms, p95 {percentile(lat, 95):6.2f} ms (repeats' p95 "
                        f"{', '.join(f'{v:.1f}' for v in m['repeats'])}; delivery p50 "
                        f"{percentile(dl, 50):.2f}, p95 {percentile(dl, 95):.2f})"
                        f"{cpu_text(m['cpu'])}",
                        flush=True,
                    )
            browser.close()


if __name__ == "__main__":
    main()
