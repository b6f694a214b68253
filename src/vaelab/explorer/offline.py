"""The explorer as one HTML file that needs no server, for `vaelab report --interactive`.

The page is the explorer's own (index.html, its styles and scripts inline), given the answers
the server would give for one run: /api/runs, /map, /map_images, /embedding (more than two
dimensions), the test images on the map and the decoder as ONNX. onnxruntime-web travels
inline too (its WebAssembly gzipped, unpacked by the browser's DecompressionStream), loaded
from blob URLs, so the page works opened from a file. It decodes in the browser; what needs
the server (encoding your own input, samples of a learned prior) is left out of the page.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from pathlib import Path
from urllib.parse import quote

from vaelab.errors import VaelabError
from vaelab.explorer import api
from vaelab.explorer.browser_decoder import VENDOR, runtime_installed
from vaelab.explorer.runs import ServedRun, serve_split
from vaelab.runs import RunSplit

STATIC = Path(__file__).parent / "static"
SCRIPTS = ("colours.js", "decoder.js", "inputs.js", "explorer.js", "panel-map.js", "panel-tools.js")
INLINE = "inline"  # RunList.runtime of an offline page: the runtime is in the page
URI_COMPONENT_SAFE = "-_.!~*'()"  # what JavaScript's encodeURIComponent leaves as it is


def offline_run(chosen: RunSplit) -> ServedRun:
    """An opened run and a split of its data as the server would serve them, with the run's
    decoder for the browser; a one-line VaelabError where the page could not decode it."""
    if not runtime_installed():
        raise VaelabError(
            "--interactive needs onnxruntime-web, which is not installed: run `make web` (it "
            "vendors it from npm)"
        )
    run_dir = chosen.run.run_dir
    run = serve_split(run_dir.name, chosen)
    if not run.browser.available:
        raise VaelabError(
            f"--interactive needs a decoder that runs in the browser; run {run_dir} is "
            f"{run.browser.note}"
        )
    return run


def offline_page(run: ServedRun) -> str:
    """The explorer page for `run` as one self-contained HTML document (see the module)."""
    base = f"/api/runs/{quote(run.name, safe=URI_COMPONENT_SAFE)}"  # the page's own paths
    info = api.run_info(run)
    answers: dict[str, object] = {
        "/api/runs": {"runs": [info.model_dump()], "runtime": INLINE},
        f"{base}/map": api.map_response(run).model_dump(),
    }
    if run.latent_dim > 2:
        answers[f"{base}/embedding"] = api.embedding_response(run).model_dump()
    for index in run.map_indices.tolist():  # their codes; the images are in the sprite
        answers[f"{base}/test_image/{index}"] = api.example(run, index).model_dump(
            exclude={"image"}
        )
    assert run.browser.onnx is not None
    sprite = "data:image/png;base64," + _b64(run.map_sprite())
    data = {"get": answers, "decoder": _b64(run.browser.onnx), "sprite": sprite}
    runtime = {
        "vaelab-ort-js": _b64((VENDOR / "ort.wasm.min.js").read_bytes()),
        "vaelab-ort-mjs": _b64((VENDOR / "ort-wasm-simd-threaded.mjs").read_bytes()),
        "vaelab-ort-wasm": _b64(
            gzip.compress((VENDOR / "ort-wasm-simd-threaded.wasm").read_bytes(), mtime=0)
        ),
    }
    inline = [
        f'<script type="application/json" id="vaelab-offline">{_json_in_html(data)}</script>',
        *(
            f'<script type="text/plain" id="{key}">{value}</script>'
            for key, value in runtime.items()
        ),
        f"<style>{(STATIC / 'explorer.css').read_text()}</style>",
    ]
    page = (STATIC / "index.html").read_text()
    page = page.replace('<link rel="stylesheet" href="/static/explorer.css">', "\n".join(inline))
    for name in SCRIPTS:
        tag = f'<script src="/static/{name}"></script>'
        if tag not in page:
            raise RuntimeError(f"index.html no longer loads {name}: update offline.SCRIPTS")
        page = page.replace(tag, f"<script>{(STATIC / name).read_text()}</script>")
    return page


def live_section(run: ServedRun) -> str:
    """The report's section: the offline explorer in a frame of its own (its styles and
    scripts kept apart from the report's)."""
    return (
        "<h2>Live latent map</h2>\n<p>The explorer of <code>vaelab serve</code>, decoding in "
        "this page (no server): move over the map, use the sliders, zoom, sample.</p>\n"
        f'<iframe class="live" title="live latent map" srcdoc="{html.escape(offline_page(run))}">'
        "</iframe>"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_in_html(value: object) -> str:
    """JSON that cannot end its <script> element early: '<' is written as \\u003c."""
    return re.sub("<", r"\\u003c", json.dumps(value, separators=(",", ":")))
