"""Decoding in the browser: a run's decoder as ONNX, which the page runs with onnxruntime-web
(vendored from npm by `make web` into static/vendor, served by vaelab itself).

The decoder comes from the run's own export (RUN/onnx, written by `vaelab export` or packed in
a bundle) when it is of the served checkpoint, else it is exported when the server starts, and
checked against PyTorch either way. Runs whose decoder cannot decode a bare code in one pass
(autoregressive or label-conditional decoders, completion models) are decoded by the server;
`note` says which, and why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.errors import VaelabError
from vaelab.runs import TrainedRun

log = logging.getLogger(__name__)

VENDOR = Path(__file__).parent / "static" / "vendor" / "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RUNTIME_URL = "/static/vendor/onnxruntime-web/"  # where the page loads the runtime from
ONNX_DIR = "onnx"
CHECK_CODES = 64  # codes the exported decoder is checked on against PyTorch


@dataclass(frozen=True)
class BrowserDecoder:
    """A run's decoder for the page: ONNX bytes, or None with the reason in `note`."""

    onnx: bytes | None
    note: str

    @property
    def available(self) -> bool:
        return self.onnx is not None


def runtime_installed() -> bool:
    """Whether onnxruntime-web's files are in the page's static folder."""
    return all((VENDOR / name).is_file() for name in RUNTIME_FILES)


def on_server(reason: str) -> BrowserDecoder:
    return BrowserDecoder(None, f"decoded by the server: {reason}")


def browser_decoder(trained: TrainedRun, codes: torch.Tensor) -> BrowserDecoder:
    """The decoder of an opened run for the page, as `BrowserDecoder`; `codes` (N, D) are
    codes of the run's data, to check an export on."""
    model = trained.model
    if model.needs_labels or trained.config.model.observe is not None:
        return on_server("its decoder also takes a class label or an observed part")
    if model.context is not None:
        return on_server("its autoregressive decoder draws pixel by pixel")
    if not runtime_installed():
        return on_server("onnxruntime-web is not installed (make web vendors it from npm)")
    saved = _saved_decoder(trained)
    if saved is not None:
        return BrowserDecoder(saved, "decoded in the browser (the run's ONNX export)")
    from vaelab.export.onnx_files import decoder_bytes  # the export extra: onnx, onnxscript

    started, device = time.perf_counter(), model.device
    try:
        onnx = decoder_bytes(model, _check_codes(codes, model.config.latent_dim))
    except (VaelabError, ImportError) as error:
        return on_server(f"its decoder could not be exported to ONNX ({error})")
    finally:
        model.to(device)  # the export works on the CPU
    log.info(
        "%s: exported the decoder for the browser in %.1f s (vaelab export %s saves it for "
        "later starts)",
        trained.run_dir.name,
        time.perf_counter() - started,
        trained.run_dir,
    )
    return BrowserDecoder(onnx, "decoded in the browser (exported when the server started)")


def _check_codes(codes: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """Up to CHECK_CODES of the run's codes, and prior-like draws where it has few."""
    generator = torch.Generator().manual_seed(0)
    drawn = torch.randn(CHECK_CODES, latent_dim, generator=generator)
    return torch.cat([codes[:CHECK_CODES].float().cpu(), drawn])[: max(CHECK_CODES, 2)]


def _saved_decoder(trained: TrainedRun) -> bytes | None:
    """decoder.onnx of the run's export, where it is a factorised decoder of the served
    checkpoint (its name and epoch in onnx.json), else None."""
    folder = trained.run_dir / ONNX_DIR
    try:
        sidecar = json.loads((folder / "onnx.json").read_text())
        same = (
            sidecar.get("checkpoint") == trained.checkpoint_name
            and sidecar.get("epoch") == trained.meta.get("epoch")
            and sidecar["decoder"]["kind"] == "factorised"
        )
        return (folder / sidecar["decoder"]["file"]).read_bytes() if same else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
