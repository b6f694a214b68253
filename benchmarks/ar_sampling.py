"""Time to sample a grid of images from a VAE with an autoregressive decoder term, per term.

Decoding without x fills the pixels one at a time, so sampling costs far more than one pass of
the decoder. For each term (`gated`, and the one-layer `local` and `local-z` beside it) this
times `model.sample(n)` (n codes from the prior, decoded pixel by pixel) and prints the best of
`--repeats` in seconds and as a ratio to `local`, all measured in this one run. Without RUN the
models are MNIST-sized (784-500-500-50 tanh MLP VAEs) with untrained weights, which take as long
as trained ones; with RUN the run itself is timed, and the other terms are built on its config.

    python benchmarks/ar_sampling.py [RUN] [--layers 4] [--threads 1] [--repeats 3] [--n 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import vaelab
from vaelab import ModelConfig, build_model

KINDS = ("gated", "local", "local-z")
MNIST_VAE = ModelConfig(
    data_shape=(1, 28, 28), latent_dim=50, hidden_dims=(500, 500), activation="tanh"
)


def seconds_to_sample(model: vaelab.Autoencoder, n: int, repeats: int) -> float:
    """The best of `repeats` wall-clock times of `model.sample(n)`."""
    times = []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(repeat)
        start = time.perf_counter()
        with torch.inference_mode():
            model.sample(n, generator=generator)
        times.append(time.perf_counter() - start)
    return min(times)


def models_to_time(run: str | None, layers: int) -> dict[str, vaelab.Autoencoder]:
    """Name -> model in eval mode: the run's (if any), then each term on its config."""
    models = {}
    config = MNIST_VAE
    if run is not None:
        loaded = vaelab.load(run)
        config = loaded.config
        models[f"{run} ({config.autoregressive}, trained)"] = loaded
    for kind in KINDS:
        torch.manual_seed(0)
        variant = dataclasses.replace(config, autoregressive=kind, ar_layers=layers)
        name = f"gated, {layers} layers" if kind == "gated" else kind
        models[name] = build_model(variant).eval()
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder (default: an untrained MNIST VAE)")
    parser.add_argument("--layers", type=int, default=4, help="the gated term's --ar-layers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timings per model; best kept")
    parser.add_argument("--n", type=int, default=64, help="images per grid")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = models_to_time(args.run, args.layers)
    shape = next(iter(models.values())).config.data_shape
    print(f"{args.n} images of {shape}, {args.threads} thread(s), best of {args.repeats}")
    seconds = {
        name: seconds_to_sample(model, args.n, args.repeats) for name, model in models.items()
    }
    for name, value in seconds.items():
        print(f"  {name:<40} {value:7.3f} s  {value / seconds['local']:6.1f} x local")


if __name__ == "__main__":
    main()
