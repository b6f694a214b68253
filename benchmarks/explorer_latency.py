"""Latency of the explorer page, in headless Chromium: from a pointer event on the latent map to
the decoded image drawn (`performance.now()` minus the event's timeStamp, measured by the page
itself), for the page decoding in the browser (onnxruntime-web) and, in the same run, with
`--server-decoding` (a round trip per move). Prints p50/p95 per setting.

Settings: the MNIST MLP VAE (784-400-20, Kingma & Welling 2014) alone; a conv VAE alone (the
default conv architecture, 20 latent units); and the two side by side, linked, where one
pointer event decodes in both panels and its latency is the slower panel's. The runs are
trained for one epoch first (on MNIST from $VAELAB_DATA, else on the built-in 8x8 digits);
--mlp and --conv take trained runs instead.

Moves are sent every --interval ms (a mouse reports at about 60 Hz: 16 ms) in blocks of --moves,
each in a fresh page; a repeat measures one block of every setting in turn, the floor's too, so
that all see the same host, and there are --repeats of them (pooled; each block's p95 is
printed too, as the spread on a shared machine is wide). A move that arrives while a decode is
drawing replaces the one waiting (the latest wins), so only drawn moves are timed. Each latency
is split into the wait before the page's first listener runs (the browser delivering the
event; taken by a capture listener on the window) and the page's own share (listener to pixels
drawn). The floor is the first part alone on an empty page from the same server: what the
browser and the driver cost with no page work at all. Every setting's server runs throughout,
idle but for its own blocks; within a repeat every setting follows the same pointer path. On
Linux each setting also prints the CPU time all Chromium's processes spent per move (from
/proc): the page's work, which a busy host moves far less than it moves latency.

    VAELAB_DATA=../shared/data python benchmarks/explorer_latency.py [--moves 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
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


FLOOR = ("empty page (floor)", "")  # the setting with no page work
EMPTY_PAGE = "<body style='margin:0'><div style='width:600px;height:600px'></div></body>"


def browser_cpu_seconds() -> dict[str, float] | None:
    """CPU seconds used so far by each Chromium process alive, by pid (Linux's /proc; None
    elsewhere): a measure of the page's work that a noisy host does not move the way it moves
    latency."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    seconds = {}
    for folder in proc.iterdir():
        try:
            if not folder.name.isdigit() or "chrom" not in (folder / "comm").read_text():
                continue
            fields = (folder / "stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:  # the process ended meanwhile
            continue
        seconds[folder.name] = ticks / os.sysconf("SC_CLK_TCK")
    return seconds


def cpu_per_move(before: dict[str, float] | None, moves: int) -> float | None:
    """ms of Chromium CPU per move since `before`: each process's increase (a process that
    ended meanwhile takes none of its time out; one that started adds all of its own)."""
    after = browser_cpu_seconds()
    if before is None or after is None:
        return None
    return 1000 * sum(t - before.get(pid, 0.0) for pid, t in after.items()) / moves


def move_randomly(page, box: dict, moves: int, interval_ms: float, rng: random.Random) -> None:
    for _ in range(moves):
        x = box["x"] + box["width"] * rng.uniform(0.1, 0.9)
        y = box["y"] + box["height"] * rng.uniform(0.1, 0.9)
        page.mouse.move(x, y)
        time.sleep(interval_ms / 1000)
    time.sleep(1.0)


def block(browser, url: str, args: argparse.Namespace, seed: int, empty: bool = False) -> dict:
    """One block of --moves in a fresh page, along the pointer path of `seed`: the latencies
    (ms) of the drawn moves (the slower panel's per move), the browser's share of each,
    Chromium's CPU per move, and where the first panel decoded. `empty`: the floor, an empty
    page of `url`'s origin (so that it has the same event: pointerrawupdate needs a secure
    context)."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    if empty:
        page.goto(f"{url}/api/runs")  # any page of the origin; its body is replaced
        page.set_content(EMPTY_PAGE)
        box, decoding = {"x": 0, "y": 0, "width": 600, "height": 600}, "-"
    else:
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']", timeout=120_000)
        decoding = page.locator(".panel").first.get_attribute("data-decoding") or "?"
        box = page.locator(".panel .map").first.bounding_box()
        assert box is not None
    page.evaluate(DELIVERED)
    rng = random.Random(seed)
    move_randomly(page, box, 50, args.interval, rng)  # first decodes compile and allocate
    page.evaluate("() => { window.vaelabLatencies = []; window.benchDelivered.clear(); }")
    cpu_before = browser_cpu_seconds()
    move_randomly(page, box, args.moves, args.interval, rng)
    cpu = cpu_per_move(cpu_before, args.moves)  # before the page's process ends
    delivered = dict(page.evaluate("() => [...window.benchDelivered]"))
    if empty:  # the floor: delivery is all there is
        latencies = delivery = list(delivered.values())
    else:
        slowest: dict[float, float] = {}
        for entry in page.evaluate("() => window.vaelabLatencies"):
            slowest[entry["event"]] = max(slowest.get(entry["event"], 0.0), entry["ms"])
        latencies = list(slowest.values())
        delivery = [delivered[event] for event in slowest if event in delivered]
    page.close()
    return {"latencies": latencies, "delivery": delivery, "where": decoding, "cpu": cpu}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", type=Path, help="a trained MLP VAE run (default: train one)")
    parser.add_argument("--conv", type=Path, help="a trained conv VAE run (default: train one)")
    parser.add_argument("--moves", type=int, default=300, help="moves per block")
    parser.add_argument("--repeats", type=int, default=3, help="blocks per setting")
    parser.add_argument("--interval", type=float, default=16.0, help="ms between moves")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the servers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        mlp = args.mlp or train_run(Path(tmp) / "mlp-vae", "mlp")
        conv = args.conv or train_run(Path(tmp) / "conv-vae", "conv")
        settings = {"MLP VAE": [mlp], "conv VAE": [conv], "MLP + conv, linked": [mlp, conv]}
        urls: dict[tuple[str, str], str] = {}
        for title, runs in settings.items():
            for where, extra in (("browser", []), ("server", ["--server-decoding"])):
                _, urls[title, where], _ = servers.enter_context(
                    running_server(runs, args.threads, extra)
                )
        urls = {FLOOR: urls["MLP VAE", "browser"], **urls}  # the floor first, on the same origin
        blocks: dict[tuple[str, str], list[dict]] = {key: [] for key in urls}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for repeat in range(args.repeats):  # every setting once a repeat: the same host
                for key, url in urls.items():
                    blocks[key].append(block(browser, url, args, repeat, empty=key == FLOOR))
                floor_p95 = percentile(blocks[FLOOR][-1]["latencies"], 95)
                print(
                    f"repeat {repeat + 1} of {args.repeats} done (floor p95 {floor_p95:.1f} ms)",
                    flush=True,
                )
            browser.close()
        for (title, where), measured in blocks.items():
            print(summary(title, where, measured, args))


def summary(title: str, where: str, measured: list[dict], args: argparse.Namespace) -> str:
    """One setting's line: pooled p50/p95 of its blocks, each block's p95, the delivery's share
    and Chromium's CPU per move."""
    lat = [v for m in measured for v in m["latencies"]]
    dl = [v for m in measured for v in m["delivery"]]
    blocks = ", ".join(f"{percentile(m['latencies'], 95):.1f}" for m in measured)
    cpu = [m["cpu"] for m in measured if m["cpu"] is not None]
    cpu_part = f"; Chromium CPU {statistics.mean(cpu):.1f} ms a move" if cpu else ""
    if not where:
        return (
            f"{title:20s} event delivered in          p50 {percentile(lat, 50):6.2f} ms, p95 "
            f"{percentile(lat, 95):6.2f} ms (blocks' p95 {blocks}){cpu_part}"
        )
    decoded = measured[0]["where"]
    return (
        f"{title:20s} decoded by the {decoded:7s}: {len(lat):4d} of {args.moves * len(measured)}"
        f" moves drawn, p50 {percentile(lat, 50):6.2f} ms, p95 {percentile(lat, 95):6.2f} ms "
        f"(blocks' p95 {blocks}; delivery p50 {percentile(dl, 50):.2f}, p95 "
        f"{percentile(dl, 95):.2f}){cpu_part}"
    )


if __name__ == "__main__":
    main()
