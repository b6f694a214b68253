"""`vaelab export` and `vaelab.export`: ONNX files of every model and architecture, checked
against PyTorch with onnxruntime on 1,000 images and 1,000 codes."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

import vaelab
from test_cli import FAST, assert_one_line_error, run_cli, snapshot
from vaelab.data import DataConfig
from vaelab.data.loading import load_digits
from vaelab.errors import VaelabError
from vaelab.export.onnx_files import export_onnx
from vaelab.models import ModelConfig, build_model
from vaelab.models.distributions import DiagonalGaussian

TINY = (*FAST, "--epochs", "1", "--hidden-dims", "16", "--quiet")

# Every model, both architectures, both likelihoods and every autoregressive term.
VARIANTS: dict[str, dict[str, Any]] = {
    "vae-mlp": {},
    "vae-conv": {"architecture": "conv"},
    "ae-mlp": {"model": "ae"},
    "dae-conv": {"model": "dae", "architecture": "conv"},
    "vae-gaussian": {"likelihood": "gaussian"},
    "vae-gaussian-conv-fixed-sigma": {
        "likelihood": "gaussian",
        "sigma": 0.1,
        "architecture": "conv",
    },
    "vae-local": {"autoregressive": "local"},
    "vae-conv-local-z": {"architecture": "conv", "autoregressive": "local-z"},
    "vae-linear": {"autoregressive": "linear", "likelihood": "gaussian"},
    # the encoder's graph holds the nearest-entry search (an ArgMin)
    "vqvae": {"model": "vqvae", "codebook_size": 16, "code_dim": 4},
    "vqvae-gaussian": {
        "model": "vqvae",
        "codebook_size": 16,
        "code_dim": 4,
        "likelihood": "gaussian",
    },
}


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """1,000 digits images, (1000, 1, 8, 8)."""
    return load_digits(DataConfig(), progress=False).pool.x[:1000]


def trained_model(options: dict[str, Any], x: torch.Tensor) -> vaelab.Autoencoder:
    """A small model of the variant, trained for 60 steps so that its outputs are not the
    near-zero ones of an initialisation."""
    torch.manual_seed(0)
    config = ModelConfig(
        data_shape=(1, 8, 8), latent_dim=3, hidden_dims=(32,), conv_channels=(8, 16), **options
    )
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        batch = x[(step * 64) % 900 :][:64]
        optimizer.zero_grad()
        model.loss(batch).total.backward()
        optimizer.step()
    return model.eval()


def run_onnx(path: Path, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {name: value.numpy() for name, value in inputs.items()})
    return {name: torch.from_numpy(value) for name, value in zip(names, values, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_matches_pytorch(variant: str, digits: torch.Tensor, tmp_path: Path) -> None:
    model = trained_model(VARIANTS[variant], digits)
    latent_dim = model.config.latent_dim  # 3, or a VQ-VAE's grid: 4 x 4 x 4
    codes = torch.randn(1000, latent_dim, generator=torch.Generator().manual_seed(1))
    done = export_onnx(model, tmp_path / "onnx", images=digits, codes=codes, value_range=(0, 1))
    sidecar = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert sidecar == json.loads(json.dumps(done.sidecar))
    assert sidecar["parity"]["images"] == 1000 and sidecar["parity"]["codes"] == 1000
    assert 0 <= done.max_difference <= 1e-5
    parity = sidecar["parity"]
    for name, gap in parity["max_abs_difference"].items():  # 1e-5 absolute, but for logits
        assert gap <= (1e-4 if name == "decoder.logits" else 1e-5), name
        assert parity["max_relative_difference"][name] <= 1e-5

    # Checked again here, independently of the export's own check: against the model's own
    # methods, at batch sizes other than the traced one (the batch dimension is dynamic).
    with torch.inference_mode():
        posterior = model.encode(digits)
        encoded = run_onnx(tmp_path / "onnx" / "encoder.onnx", x=digits)
        assert list(encoded) == list(sidecar["encoder"]["outputs"])
        assert (encoded["mean"] - posterior.mean).abs().max() <= 1e-5
        if isinstance(posterior, DiagonalGaussian):
            assert (encoded["log_variance"] - posterior.logvar).abs().max() <= 1e-5
        else:
            assert list(encoded) == ["mean"]
        for n in (1, 7, 1000):
            inputs = {"z": codes[:n]}
            if model.context is not None:
                inputs["x"] = digits[:n]
            params = model.decode_params(codes[:n], inputs.get("x"))
            decoded = run_onnx(tmp_path / "onnx" / "decoder.onnx", **inputs)
            assert decoded["mean"].shape == (n, 1, 8, 8)
            assert (decoded["mean"] - model.likelihood.mean(params)).abs().max() <= 1e-5
            if model.config.likelihood == "bernoulli":  # see TOLERANCE: relative beyond 1
                gap = (decoded["logits"] - params).abs() / params.abs().clamp_min(1)
                assert gap.max() <= 1e-5
            else:
                assert "logits" not in decoded
    decoder = sidecar["decoder"]
    if model.context is None:
        assert decoder["kind"] == "factorised" and list(decoder["inputs"]) == ["z"]
    else:
        assert decoder["kind"] == "autoregressive-scoring" and list(decoder["inputs"]) == ["z", "x"]
        assert "once per pixel" in decoder["note"]
    assert sidecar["latent_dim"] == latent_dim and sidecar["data_shape"] == [1, 8, 8]
    assert sidecar["value_range"] == [0, 1]
    if model.config.likelihood == "gaussian":
        sigma = torch.exp(model.likelihood.log_sigma).item()
        assert sidecar["likelihood"] == {"name": "gaussian", "sigma": pytest.approx(sigma)}


def test_an_autoregressive_graph_reads_only_earlier_pixels(digits, tmp_path) -> None:
    """The exported scoring function keeps the decoder causal: changing pixel j changes no
    output at j or before it."""
    model = trained_model({"autoregressive": "local-z"}, digits)
    codes = torch.randn(1000, 3)
    export_onnx(model, tmp_path / "onnx", images=digits, codes=codes)
    x = digits[:1].clone()
    j = 27  # row 3, column 3 of 8x8
    before = run_onnx(tmp_path / "onnx" / "decoder.onnx", z=codes[:1], x=x)["logits"].flatten()
    x.view(-1)[j] = 1.0 - x.view(-1)[j]
    after = run_onnx(tmp_path / "onnx" / "decoder.onnx", z=codes[:1], x=x)["logits"].flatten()
    assert torch.equal(before[: j + 1], after[: j + 1])
    assert not torch.equal(before[j + 1 :], after[j + 1 :])


def test_a_disagreement_refuses_the_export_and_writes_nothing(digits, tmp_path) -> None:
    model = trained_model({}, digits)
    with pytest.raises(VaelabError, match="disagree with PyTorch.*nothing was written"):
        export_onnx(
            model, tmp_path / "onnx", images=digits, codes=torch.randn(9, 3), tolerance=1e-30
        )
    assert list(tmp_path.iterdir()) == []


def test_a_posterior_without_an_onnx_form_is_refused(digits, tmp_path) -> None:
    class Strange:
        def __init__(self, z: torch.Tensor) -> None:
            self.z = z

    model = trained_model({}, digits)
    model.encode = lambda x, y=None: Strange(x.flatten(1)[:, :3])  # type: ignore[method-assign]
    with pytest.raises(VaelabError, match="its posterior, a Strange, has no ONNX form"):
        export_onnx(model, tmp_path / "onnx", images=digits, codes=torch.randn(9, 3))
    assert list(tmp_path.iterdir()) == []


# --- the command -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "vae"
    assert vaelab.cli.main(["train", "--out", str(folder), *TINY]) == 0
    return folder


def test_export_writes_checked_files_into_the_run(run, capsys) -> None:
    code, out, _ = run_cli(capsys, "export", run)
    assert code == 0
    folder = run / "onnx"
    assert out.splitlines()[-3:] == [
        str(folder / name) for name in ("encoder.onnx", "decoder.onnx", "onnx.json")
    ]
    sidecar = json.loads((folder / "onnx.json").read_text())
    assert sidecar["parity"]["images"] == 359  # the whole test split of digits (< 1000)
    assert sidecar["parity"]["codes"] == 1000
    assert sidecar["checkpoint"] == "best" and sidecar["run"] == str(run)
    codes = torch.randn(5, 2)
    decoded = run_onnx(folder / "decoder.onnx", z=codes)["mean"]
    with torch.inference_mode():
        assert (decoded - vaelab.load(run).decode(codes)).abs().max() <= 1e-5
    # A second export replaces the first.
    assert run_cli(capsys, "export", run, "--check", "10")[0] == 0
    assert json.loads((folder / "onnx.json").read_text())["parity"]["codes"] == 10


def test_export_without_the_extra_says_how_to_install_it(
    run, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real_import = builtins.__import__

    def without_onnxruntime(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    code, _, err = run_cli(capsys, "export", run, "--out", tmp_path / "onnx")
    assert_one_line_error(
        code, err, "needs onnxruntime (not installed): pip install 'vaelab[export]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_exports_fail_in_one_line_and_leave_nothing(run, tmp_path, capsys) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    cases = [
        (("export", tmp_path / "nothing"), "does not exist"),
        (("export", run, "--out", tmp_path / "mine"), "already exists and is not one to replace"),
        (("export", run, "--out", tmp_path / "no" / "onnx"), "folder"),
        (("export", run, "--check", "0"), "expected a positive whole number"),
        (("export", run, "--format", "tflite"), "invalid choice"),
    ]
    for args, fragment in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, fragment)
    assert snapshot(tmp_path) == before


def test_a_missing_or_corrupt_checkpoint_is_named(run, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    code, _, err = run_cli(capsys, "export", broken)
    assert_one_line_error(code, err, "not a vaelab run or checkpoint folder")

    corrupt = tmp_path / "corrupt"
    for entry in ("best", "config.json"):
        source = run / entry
        if source.is_dir():
            (corrupt / entry).mkdir(parents=True)
            for file in source.iterdir():
                (corrupt / entry / file.name).write_bytes(file.read_bytes())
        else:
            (corrupt / entry).write_bytes(source.read_bytes())
    weights = corrupt / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli(capsys, "export", corrupt)
    assert_one_line_error(code, err, "corrupt or truncated")
    assert not (corrupt / "onnx").exists()


def test_onnx_decodes_like_the_model_in_numpy_alone(run, tmp_path) -> None:
    """What a user of another language does: read the sidecar, feed float32 arrays."""
    assert vaelab.cli.main(["export", str(run), "--out", str(tmp_path / "onnx"), "-q"]) == 0
    sidecar = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / sidecar["encoder"]["file"]))
    x = np.zeros((2, *sidecar["data_shape"]), dtype=np.float32)
    mean, log_variance = session.run(None, {"x": x})
    assert mean.shape == (2, sidecar["latent_dim"]) == log_variance.shape


def test_ctrl_c_while_tracing_is_an_interrupt(digits, tmp_path, monkeypatch) -> None:
    """torch's exporter wraps a KeyboardInterrupt in its own error, with colour codes; it must
    still stop the command as an interrupt, not as an export failure."""

    def interrupted(*args: object, **kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("Failed to export. \x1b[96mThis is step 1/3\x1b[0m") from interrupt

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    model = trained_model({}, digits)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, tmp_path / "onnx", images=digits[:9], codes=torch.randn(9, 3))
    assert list(tmp_path.iterdir()) == []

    def failed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Failed to export. \x1b[96mThis is step 1/3\x1b[0m of exporting")

    monkeypatch.setattr(torch.onnx, "export", failed)
    with pytest.raises(
        VaelabError,
        match=r"^cannot export the encoder to ONNX: Failed to export. This is step 1/3 of expo",
    ):
        export_onnx(model, tmp_path / "onnx", images=digits[:9], codes=torch.randn(9, 3))


def test_sigterm_ends_a_command_as_ctrl_c_does() -> None:
    import signal

    from vaelab.cli.app import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with _terminate_as_interrupt():
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler is not before
        with pytest.raises(KeyboardInterrupt, match="terminated"):
            handler(signal.SIGTERM, None)  # what the signal runs, without killing pytest
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the command
