"""Write a model's encoder and decoder as ONNX files, and check them against PyTorch.

`export_onnx` traces the graphs of `vaelab.export.graphs` with torch's ONNX exporter (the
`torch.export`-based one, with a dynamic batch size), runs the files in onnxruntime on check
inputs, and refuses the export (leaving nothing behind) unless every output matches PyTorch's
within a tolerance. A JSON sidecar says what each input and output means.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.export.graphs import ModelGraphs, model_graphs
from vaelab.files import atomic_folder
from vaelab.models import Autoencoder
from vaelab.models.networks import count_parameters
from vaelab.version import __version__

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SIDECAR_FILE = "onnx.json"
FORMAT = "vaelab-onnx"
FORMAT_VERSION = 1
# The largest |onnxruntime - PyTorch| / max(1, |PyTorch|) accepted on any output value: an
# absolute difference for values within [-1, 1] (images, most codes), a relative one beyond.
# Float32 itself cannot hold 1e-5 absolute on large values (its spacing is 3.8e-6 at 32 and
# 1.5e-5 at 128), and a Bernoulli decoder's logits reach 45 on MNIST: the two runtimes sum
# in different orders and differ by a few units of the last place there.
TOLERANCE = 1e-5
INSTALL_HINT = "pip install 'vaelab[export]'"
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its messages


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export (which a new one may replace)."""
    return (folder / SIDECAR_FILE).is_file()


def require_export_dependencies() -> None:
    """A one-line VaelabError naming the install command when onnx, onnxruntime or onnxscript
    (which torch's exporter uses) is missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise VaelabError(
            f"exporting to ONNX needs {', '.join(missing)} (not installed): {INSTALL_HINT}"
        )


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote: the folder, its files and the sidecar's contents."""

    folder: Path
    sidecar: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in (ENCODER_FILE, DECODER_FILE, SIDECAR_FILE)]

    @property
    def max_difference(self) -> float:
        """The largest difference found, relative to max(1, |value|) (see TOLERANCE)."""
        return max(self.sidecar["parity"]["max_relative_difference"].values())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress lines, warnings and log records off the console."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _trace(
    graph: nn.Module,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    part: str,
) -> None:
    """Export `graph` to `path` with the batch (first) dimension of every input dynamic."""
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                graph,
                inputs,
                path,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=tuple({0: batch} for _ in inputs),
                dynamo=True,
                external_data=False,
            )
    except Exception as error:  # the exporter raises many kinds, and wraps others' errors
        cause = _root_cause(error)
        if isinstance(cause, KeyboardInterrupt):  # Ctrl-C while tracing: an interrupt
            raise KeyboardInterrupt from None
        text = ANSI_CODES.sub("", str(cause)).strip()
        reason = text.splitlines()[0] if text else type(cause).__name__
        raise VaelabError(f"cannot export the {part} to ONNX: {reason}") from None


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception an error was raised from (or while handling)."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _differences(
    session: Any,
    graph: nn.Module,
    inputs: tuple[Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    part: str,
) -> tuple[dict[str, float], dict[str, float]]:
    """For each output of `graph` on `inputs`: max |onnxruntime - PyTorch|, and the same
    divided by max(1, |PyTorch|) value by value (see TOLERANCE)."""
    with torch.inference_mode():
        expected = graph(*inputs)
    feeds = {name: value.numpy() for name, value in zip(input_names, inputs, strict=True)}
    actual = session.run(list(output_names), feeds)
    absolute, scaled = {}, {}
    for name, want, got in zip(output_names, expected, actual, strict=True):
        if tuple(got.shape) != tuple(want.shape):
            raise VaelabError(
                f"the exported {part} gives {name} of shape {tuple(got.shape)}, PyTorch "
                f"{tuple(want.shape)}"
            )
        gap = (torch.from_numpy(got) - want).abs()
        key = f"{part}.{name}"
        absolute[key] = _finite_max(gap)
        scaled[key] = _finite_max(gap / want.abs().clamp_min(1.0))
    return absolute, scaled


def _finite_max(values: Tensor) -> float:
    """The largest value (0 for none); inf when any is NaN or infinite."""
    if values.numel() == 0:
        return 0.0
    largest = values.max().item()
    return largest if math.isfinite(largest) else math.inf


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def export_onnx(
    model: Autoencoder,
    out: str | Path,
    *,
    images: Tensor,
    codes: Tensor,
    value_range: tuple[float, float] | None = None,
    preprocessing: str | None = None,
    tolerance: float = TOLERANCE,
    about: dict[str, Any] | None = None,
) -> OnnxExport:
    """Write `out`/encoder.onnx, decoder.onnx and onnx.json for `model`, replacing an earlier
    export there; nothing is left behind when any step fails.

    The files are checked on `images` (N, C, H, W) and `codes` (M, D): every output value of
    onnxruntime must be within `tolerance` of PyTorch's, relative to max(1, |value|) (see
    TOLERANCE), or the export is refused.
    `value_range` is the training data's (min, max) and `preprocessing` how images were brought
    to the encoder's input, in words; `about` adds entries to the sidecar (the run it came
    from).
    """
    require_export_dependencies()
    model = model.to("cpu", torch.float32).eval()
    graphs = model_graphs(model)
    images = images.to("cpu", torch.float32)
    codes = codes.to("cpu", torch.float32)
    model.check_images(images)
    model.check_codes(codes)
    decoder_inputs: tuple[Tensor, ...] = (codes,)
    if graphs.autoregressive:
        n = min(len(codes), len(images))
        decoder_inputs = (codes[:n], images[:n])
    out = Path(out)
    with atomic_folder(out, replace_if=is_export) as tmp:
        encoder_outputs = graphs.encoder_outputs
        _trace(
            graphs.encoder, (images[:2],), tmp / ENCODER_FILE, ("x",), encoder_outputs, "encoder"
        )
        _trace(
            graphs.decoder,
            tuple(value[:2] for value in decoder_inputs),
            tmp / DECODER_FILE,
            graphs.decoder_inputs,
            graphs.decoder_outputs,
            "decoder",
        )
        encoder_gaps = _differences(
            _session(tmp / ENCODER_FILE),
            graphs.encoder,
            (images,),
            ("x",),
            graphs.encoder_outputs,
            "encoder",
        )
        decoder_gaps = _differences(
            _session(tmp / DECODER_FILE),
            graphs.decoder,
            decoder_inputs,
            graphs.decoder_inputs,
            graphs.decoder_outputs,
            "decoder",
        )
        absolute = {**encoder_gaps[0], **decoder_gaps[0]}
        scaled = {**encoder_gaps[1], **decoder_gaps[1]}
        worst = max(scaled, key=scaled.__getitem__)
        if not scaled[worst] <= tolerance:
            raise VaelabError(
                f"the ONNX files disagree with PyTorch: {worst} differs by up to "
                f"{absolute[worst]:.3g} ({scaled[worst]:.3g} relative to max(1, |value|); "
                f"tolerance {tolerance:g}); nothing was written"
            )
        sidecar = describe(
            model,
            graphs,
            value_range=value_range,
            preprocessing=preprocessing,
            opset=_opset(tmp / ENCODER_FILE),
            parity={
                "images": len(images),
                "codes": len(decoder_inputs[0]),
                "tolerance": tolerance,
                "compared": "|onnxruntime - PyTorch| / max(1, |PyTorch|), value by value",
                "max_abs_difference": absolute,
                "max_relative_difference": scaled,
            },
            about=about or {},
        )
        (tmp / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
    return OnnxExport(out, sidecar)


def describe(
    model: Autoencoder,
    graphs: ModelGraphs,
    *,
    value_range: tuple[float, float] | None,
    preprocessing: str | None,
    opset: int,
    parity: dict[str, Any],
    about: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar: shapes, value range, latent size, likelihood, what each output means."""
    config = model.config
    image = ["batch", *config.data_shape]
    code = ["batch", config.latent_dim]
    low, high = value_range if value_range is not None else (None, None)
    pixels = "images as the run's training data: see preprocessing"
    encoder_outputs = {
        "mean": {"shape": code, "meaning": "the posterior's mean: the code of each image"},
        "log_variance": {
            "shape": code,
            "meaning": "log sigma^2 of the diagonal Gaussian posterior q(z|x); a sample is "
            "mean + exp(0.5 * log_variance) * eps, eps ~ N(0, I)",
        },
    }
    if "log_variance" not in graphs.encoder_outputs:
        encoder_outputs["mean"]["meaning"] = "the code of each image (a deterministic encoder)"
    likelihood: dict[str, Any] = {"name": model.likelihood.name}
    if model.likelihood.name == "gaussian":
        likelihood["sigma"] = float(torch.exp(model.likelihood.log_sigma).item())
    kind = "p(x_j | z, x_<j), read from the given x" if graphs.autoregressive else "p(x|z)"
    decoder_outputs = {
        "mean": {"shape": image, "meaning": f"the mean of {kind}, in data space"},
        "logits": {"shape": image, "meaning": f"the Bernoulli logits of {kind}: mean = sigmoid"},
    }
    decoder_inputs = {"z": {"shape": code, "dtype": "float32", "meaning": "codes"}}
    if graphs.autoregressive:
        decoder_inputs["x"] = {
            "shape": image,
            "dtype": "float32",
            "meaning": "the images being scored; each pixel's output reads only the pixels "
            "before it (raster order, channel-wise)",
        }
    decoder: dict[str, Any] = {
        "file": DECODER_FILE,
        "kind": "autoregressive-scoring" if graphs.autoregressive else "factorised",
        "inputs": decoder_inputs,
        "outputs": {name: decoder_outputs[name] for name in graphs.decoder_outputs},
    }
    if graphs.autoregressive:
        decoder["note"] = (
            "an autoregressive decoder: this graph scores given images in one pass (teacher "
            "forcing). To decode a code without an image, fill the pixels in raster order, "
            "running the graph once per pixel and feeding each chosen value back; vaelab's "
            "own `decode` does that."
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaelab_version": __version__,
        "torch_version": torch.__version__,
        "opset": opset,
        "model": config.model,
        "title": model.title,
        "architecture": config.architecture,
        "parameters": count_parameters(model),
        "data_shape": list(config.data_shape),
        "latent_dim": config.latent_dim,
        "value_range": None if value_range is None else [low, high],
        "value_range_meaning": "the smallest and largest value in the training data; vaelab's "
        "PNG figures draw them as black and white (a linear stretch)",
        "preprocessing": preprocessing,
        "likelihood": likelihood,
        "prior": None if model.prior is None else model.prior.describe(),
        "encoder": {
            "file": ENCODER_FILE,
            "inputs": {"x": {"shape": image, "dtype": "float32", "meaning": pixels}},
            "outputs": {name: encoder_outputs[name] for name in graphs.encoder_outputs},
        },
        "decoder": decoder,
        "parity": parity,
        **about,
    }


def decoder_bytes(model: Autoencoder, codes: Tensor, *, tolerance: float = TOLERANCE) -> bytes:
    """The factorised decoder of `model` as ONNX bytes, z (B, D) -> its outputs (see
    `graphs.DecoderGraph`), checked against PyTorch on `codes` as `export_onnx` checks it: what
    the explorer's page runs in the browser. A one-line VaelabError for a decoder that cannot
    decode z alone (autoregressive, conditional) or that disagrees with PyTorch."""
    require_export_dependencies()
    model = model.to("cpu", torch.float32).eval()
    graphs = model_graphs(model)
    if graphs.autoregressive:
        raise VaelabError("an autoregressive decoder cannot decode a code in one pass")
    codes = codes.to("cpu", torch.float32)
    model.check_codes(codes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DECODER_FILE
        _trace(graphs.decoder, (codes[:2],), path, ("z",), graphs.decoder_outputs, "decoder")
        absolute, scaled = _differences(
            _session(path), graphs.decoder, (codes,), ("z",), graphs.decoder_outputs, "decoder"
        )
        worst = max(scaled, key=scaled.__getitem__)
        if not scaled[worst] <= tolerance:
            raise VaelabError(
                f"the ONNX decoder disagrees with PyTorch: {worst} differs by up to "
                f"{absolute[worst]:.3g} (tolerance {tolerance:g})"
            )
        return path.read_bytes()
