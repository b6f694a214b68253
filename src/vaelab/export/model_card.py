"""A bundle's model card: the README.md a Hugging Face model repository shows, with its YAML
metadata, what was trained on what, the evaluation, a sample grid and how to reproduce it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from vaelab.bundles import LIBRARY_NAME
from vaelab.training.config import RunConfig

# Registered datasets and their names on the Hugging Face Hub, for the card's metadata.
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
DATASET_TITLES = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "digits": "8x8 digits",
    "shapes": "vaelab's dSprites-like shapes",
}


def dataset_title(dataset: str) -> str:
    """A dataset's name for a public card: the registered title, or a path's last part (a
    card is shared, so it does not show where the data sat on the training machine)."""
    return DATASET_TITLES.get(dataset, f"`{Path(dataset).name}`")


def _front_matter(config: RunConfig, has_onnx: bool) -> list[str]:
    tags = ["vaelab", "pytorch", "autoencoder"]
    if config.model.model != "ae":
        tags.append("vae" if config.model.model == "vae" else config.model.model)
    if has_onnx:
        tags.append("onnx")
    lines = ["---", f"library_name: {LIBRARY_NAME}", "tags:", *(f"- {tag}" for tag in tags)]
    hub = HUB_DATASETS.get(config.data.dataset)
    if hub is not None:
        lines += ["datasets:", f"- {hub}"]
    return [*lines, "---", ""]


def _row(name: str, value: Any) -> str:
    return f"| {name} | {value} |"


def _model_rows(config: RunConfig, title: str, parameters: int, prior: str | None) -> list[str]:
    model = config.model
    network = (
        f"mlp, hidden {', '.join(map(str, model.hidden_dims))}"
        if model.architecture == "mlp"
        else f"conv, channels {', '.join(map(str, model.conv_channels))}"
    )
    likelihood = model.likelihood
    if likelihood == "gaussian":
        likelihood += f", sigma {'learned' if model.sigma is None else model.sigma}"
    if model.autoregressive != "none":
        likelihood += f", autoregressive ({model.autoregressive})"
    rows = [
        _row("model", f"{title} (`{model.model}`)"),
        _row("networks", f"{network}, {model.activation}"),
        _row("latent", f"{model.latent_dim} dimensions" + (f", prior {prior}" if prior else "")),
        _row("decoder likelihood", likelihood),
        _row("parameters", f"{parameters:,}"),
    ]
    if model.beta != 1.0:
        rows.append(_row("KL weight (beta)", f"{model.beta:g}"))
    if model.objective != "elbo" or model.k != 1:
        rows.append(_row("objective", f"{model.objective}, k = {model.k}"))
    return rows


def _training_rows(config: RunConfig, meta: dict[str, Any], splits: dict[str, int]) -> list[str]:
    data = config.data
    title = dataset_title(data.dataset)
    shape = "×".join(map(str, config.model.data_shape))
    sizes = ", ".join(f"{count:,} {name}" for name, count in splits.items())
    metrics = meta.get("metrics", {})
    val = metrics.get("val/loss")
    rows = [
        _row("data", f"{title}, {shape}" + (f"; {sizes}" if sizes else "")),
        _row(
            "binarised",
            "dynamically (a fresh Bernoulli draw of each batch)" if data.binarize else "no",
        ),
        _row(
            "epochs",
            f"{config.train.epochs} planned; this checkpoint after epoch {meta.get('epoch')}, "
            f"step {meta.get('step')}",
        ),
        _row(
            "optimiser",
            f"{config.optim.optimizer}, learning rate {config.optim.lr:g}, "
            f"batch {config.train.batch_size}",
        ),
        _row("seed", config.train.seed),
    ]
    if val is not None:
        rows.append(_row("validation loss", f"{val:.3f} nats per image"))
    return rows


def _evaluation_lines(record: dict[str, Any] | None, config: RunConfig) -> list[str]:
    if record is None:
        return ["Not evaluated when packed (`vaelab eval BUNDLE` measures it).", ""]
    lines = [
        f"On the {record['split']} split of "
        f"{dataset_title(record['dataset'])}: {record['examples']:,} images"
        + (f", a fixed binary draw (seed {record['seed']})" if record.get("binarized") else "")
        + f"; {record['checkpoint']} checkpoint; `vaelab eval`, vaelab {record.get('vaelab')}.",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    if record.get("nll") is None:
        return [
            *lines,
            _row("reconstruction NLL", f"{record['recon']:.3f} nats per image"),
            _row("reconstruction MSE", f"{record['mse']:.5f} per pixel"),
            "",
        ]
    grey_bernoulli = config.model.likelihood == "bernoulli" and not record.get("binarized")
    if record.get("point_posterior"):
        return [*lines, *_point_posterior_rows(record), ""]
    return [
        *lines,
        _row(
            f"−log p(x), importance-weighted, k = {record['k']}",
            f"{record['nll']:.3f} ± {record.get('nll_stderr') or 0:.3f} nats "
            f"({record['nll_bits_per_dim']:.4f} bits/dim)",
        ),
        _row("negative ELBO", f"{record['neg_elbo']:.3f} nats"),
        _row("reconstruction (E_q −log p(x|z))", f"{record['recon']:.3f} nats"),
        _row("KL(q(z|x) ‖ p(z))", f"{record['kl']:.3f} nats"),
        _row("active units", f"{record['active_units']} of {record['latent_dim']}"),
        _row("reconstruction MSE", f"{record['mse']:.5f} per pixel"),
        "",
        "The ± is the standard error over the images; the figures are bounds on −log p(x), "
        "tighter as k grows."
        + (
            " The images are not binarised: where they hold grey levels, a Bernoulli decoder's "
            "figures are cross-entropies, not log-likelihoods."
            if grey_bernoulli
            else ""
        ),
        "",
    ]


def _point_posterior_rows(record: dict[str, Any]) -> list[str]:
    """A VQ-VAE's evaluation: its bound, the prior it is under, and its own measures."""
    measures = record.get("measures") or {}
    return [
        _row(
            "−log p(x), bound (the ELBO of a point-mass posterior)",
            f"{record['nll']:.3f} ± {record.get('nll_stderr') or 0:.3f} nats "
            f"({record['nll_bits_per_dim']:.4f} bits/dim)",
        ),
        _row("reconstruction (−log p(x|z_q))", f"{record['recon']:.3f} nats"),
        _row("code (−log p(z_q))", f"{record['kl']:.3f} nats"),
        _row("prior", str(record.get("prior"))),
        *(_row(name.replace("_", " "), f"{value:.4f}") for name, value in measures.items()),
        _row("reconstruction MSE", f"{record['mse']:.5f} per pixel"),
        "",
        "The ± is the standard error over the images. The bound is exact in k (the posterior is "
        "a point mass); a VAE's importance-weighted figure is also a bound on −log p(x), so "
        "the two compare as bounds.",
    ]


def _onnx_lines(
    onnx: dict[str, Any], config: RunConfig, *, has_prior: bool, gaussian_prior: bool
) -> list[str]:
    """How to use the ONNX files without PyTorch. Codes come from N(0, I) for a model with that
    prior, else from the encoder (a VQ-VAE's PixelCNN prior is not among the ONNX files)."""
    decoder = onnx["decoder"]
    scoring = decoder["kind"] == "autoregressive-scoring"
    parity = onnx["parity"]
    lines = [
        "### Without PyTorch: ONNX",
        "",
        f"`onnx/encoder.onnx` maps images x to {', '.join(onnx['encoder']['outputs'])}. ",
        "",
    ]
    if scoring:
        lines[-2] += (
            "`onnx/decoder.onnx` is an autoregressive decoder's one-pass scoring function: "
            f"(z, x) to {', '.join(decoder['outputs'])} of p(x_j | z, x_<j) for every pixel, "
            "read from the given x. Sampling runs it once per pixel, feeding each value back."
        )
    else:
        lines[-2] += f"`onnx/decoder.onnx` maps codes z to {', '.join(decoder['outputs'])}."
    lines[-2] += (
        " `onnx/onnx.json` gives every shape, the value range and what each output means. "
        f"On {parity['images']:,} images and {parity['codes']:,} codes they match PyTorch "
        f"within {parity['tolerance']:g} relative to max(1, |value|)."
    )
    shape = ", ".join(map(str, config.model.data_shape))
    lines += [
        "```python",
        "import numpy as np, onnxruntime as ort",
        'decoder = ort.InferenceSession("onnx/decoder.onnx")',
    ]
    if has_prior and gaussian_prior:
        lines.append(
            f'z = np.random.randn(16, {config.model.latent_dim}).astype("float32")   # the prior'
        )
    else:  # an autoencoder's codes come from its encoder, not from a prior
        if has_prior:
            lines.append("# the prior over codes runs in vaelab (vaelab sample); here, codes of x")
        lines += [
            'encoder = ort.InferenceSession("onnx/encoder.onnx")',
            f'x = np.random.rand(16, {shape}).astype("float32")   # your images, as onnx.json says',
            'z = encoder.run(["mean"], {"x": x})[0]',
        ]
    if scoring:
        lines += [
            f'x = np.zeros((16, {shape}), dtype="float32")   # the images to score'
            if has_prior
            else "# x: the images to score",
            f'[{", ".join(decoder["outputs"])}] = decoder.run(None, {{"z": z, "x": x}})',
        ]
    else:
        lines.append('images = decoder.run(["mean"], {"z": z})[0]')
    return [*lines, "```", ""]


def model_card(
    *,
    name: str,
    config: RunConfig,
    meta: dict[str, Any],
    title: str,
    parameters: int,
    prior: str | None,
    splits: dict[str, int],
    evaluation: dict[str, Any] | None,
    figure: tuple[str, str] | None,
    onnx: dict[str, Any] | None,
    gaussian_prior: bool = True,
) -> str:
    """The README.md of a bundle named `name`. `figure` is (file, caption); `onnx` the ONNX
    sidecar, or None when the bundle has no ONNX files; `gaussian_prior` False for a prior
    that NumPy cannot draw from in one line (a VQ-VAE's PixelCNN)."""
    dataset = dataset_title(config.data.dataset)
    shown = shlex.quote(name)  # the bundle's folder, as a shell word
    lines = [
        *_front_matter(config, onnx is not None),
        f"# {name}: a {title} on {dataset}",
        "",
        f"A {title} with a {config.model.latent_dim}-dimensional latent space, trained with "
        "[vaelab](https://pypi.org/project/vaelab/). This folder is a vaelab bundle: "
        "`vaelab.load` and every `vaelab` command that takes a run take it too.",
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        *_model_rows(config, title, parameters, prior),
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        *_training_rows(config, meta, splits),
        "",
        "## Evaluation",
        "",
        *_evaluation_lines(evaluation, config),
    ]
    if figure is not None:
        lines += ["## Samples", "", f"![{figure[1]}]({figure[0]})", "", figure[1] + ".", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install vaelab",
        *(
            [
                f"vaelab sample {shown} --n 64        # a grid decoded from the prior",
                f"vaelab eval {shown} --k 5000         # test NLL, as papers report it",
            ]
            if prior is not None
            else [
                f"vaelab reconstruct {shown} --n 10   # test images above their reconstructions",
                f"vaelab eval {shown}                  # reconstruction error on the test split",
            ]
        ),
        f"vaelab serve {shown}                 # the latent-space explorer",
        "```",
        "",
        "```python",
        "import vaelab",
        f"model = vaelab.load({name!r})      # a torch.nn.Module, in eval mode",
        "codes = model.encode(images).mean   # images: (B, "
        + ", ".join(map(str, config.model.data_shape))
        + ")",
        "```",
        "",
    ]
    if onnx is not None:
        lines += _onnx_lines(
            onnx, config, has_prior=prior is not None, gaussian_prior=gaussian_prior
        )
    lines += [
        "## Reproduce",
        "",
        "`config.json` holds every option of the run:",
        "",
        "```bash",
        f"vaelab train --config config.json --out {shlex.quote('runs/' + name)}",
        "```",
        "",
        "## Files",
        "",
        "- `config.json`, `model.safetensors`, `meta.json`: the checkpoint (weights, "
        "configuration, training position)",
        "- `bundle.json`: the size and SHA-256 of each model file, checked on loading",
    ]
    if onnx is not None:
        lines.append("- `onnx/`: the encoder and decoder as ONNX files, and their description")
    lines += [
        "- `eval.json`, `metrics.jsonl`: the evaluation and the training curves, where present",
        "",
    ]
    return "\n".join(lines)
