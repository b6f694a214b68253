"""Speed of `vaelab.evaluate`'s importance-weighted NLL against this machine's matmul throughput.

For the classic MLP VAEs on MNIST's test images it prints images/s of the k-sample pass, the
FLOP/s that achieves (the decoder's matrix products, 2 * in * out per layer and sample), and the
fp32 matmul throughput measured in the same run: on the decoder's own shapes at the pass size,
and on a large square product. The share is taken against the larger of the two. On a CPU with
native bfloat16 (AVX512-BF16 or AMX) it does the same for `evaluate(..., amp=True)` against the
bfloat16 matmul throughput, and prints how far its NLL is from the fp32 pass's.

    VAELAB_DATA=../shared/data python benchmarks/eval_speed.py [--images 10000] [--k 5000]
"""

from __future__ import annotations

import argparse
import time

import torch

import vaelab
from vaelab.analysis.evaluate import DEFAULT_CHUNK, evaluate
from vaelab.training.precision import cpu_bf16_units, native_bf16

MODELS = {  # name: (hidden sizes, latent size, activation)
    "kingma": ((400,), 20, "relu"),  # Kingma & Welling (2013): 784-400-20
    "iwae": ((200, 200), 50, "tanh"),  # Burda et al. (2015), one stochastic layer
}


def decoder_layers(hidden: tuple[int, ...], latent: int) -> list[tuple[int, int]]:
    sizes = [latent, *reversed(hidden), 784]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def matmul_gflops(
    shapes: list[tuple[int, int, int]], repeats: int, dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of torch.mm in `dtype` over these (rows, in, out) products, run back to back."""
    products = [
        (torch.randn(m, a, dtype=dtype), torch.randn(a, b, dtype=dtype)) for m, a, b in shapes
    ]
    for left, right in products:  # warm up
        torch.mm(left, right)
    start = time.perf_counter()
    for _ in range(repeats):
        for left, right in products:
            torch.mm(left, right)
    seconds = time.perf_counter() - start
    return repeats * sum(2 * m * a * b for m, a, b in shapes) / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images (10000: all)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (default: 2; the README's figures used 2, this machine's "
        "cores); set, since torch's default can run 100x slower on a busy machine",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = vaelab.load_data(vaelab.DataConfig(dataset="mnist", val_fraction=0.0), progress=False)
    x = torch.bernoulli(data.test.x[: args.images], generator=torch.Generator().manual_seed(0))
    amp = native_bf16(torch.device("cpu"))
    precisions = {"fp32": torch.float32, "bf16": torch.bfloat16} if amp else {"fp32": torch.float32}
    square = {p: matmul_gflops([(2048, 2048, 2048)], 10, dtype) for p, dtype in precisions.items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(x)} test images, "
        f"k = {args.k}, chunk = {args.chunk}; bfloat16 units: {cpu_bf16_units()}"
    )
    for precision, gflops in square.items():
        print(f"{precision} matmul, 2048 x 2048 x 2048: {gflops:.1f} GFLOP/s")
    for name in args.models:
        hidden, latent, activation = MODELS[name]
        torch.manual_seed(0)
        model = vaelab.build_model(
            vaelab.ModelConfig(latent_dim=latent, hidden_dims=hidden, activation=activation)
        ).eval()
        layers = decoder_layers(hidden, latent)
        rows = min(args.k, args.chunk) * max(1, args.chunk // args.k)
        flops_per_sample = sum(2 * a * b for a, b in layers)
        print(f"\n{name}: decoder {' -> '.join(str(a) for a, _ in layers)} -> 784")
        nll = {}
        for precision, dtype in precisions.items():
            shapes = matmul_gflops([(rows, a, b) for a, b in layers], 5, dtype)
            result = evaluate(
                model, x, k=args.k, chunk=args.chunk, binarize=False, amp=precision == "bf16"
            )
            nll[precision] = result.nll
            achieved = result.images_per_second * args.k * flops_per_sample / 1e9
            ceiling = max(square[precision], shapes)
            print(
                f"  {precision} evaluate {result.images_per_second:8.1f} images/s   "
                f"({result.images_per_second * args.k / 1e6:.2f}M samples/s, "
                f"{len(x) / result.images_per_second:.0f} s for {len(x)} images)"
            )
            print(
                f"  {precision} matmuls  {shapes:8.1f} GFLOP/s on the decoder's shapes "
                f"({rows} rows)"
            )
            print(
                f"  {precision} evaluate achieves {achieved:.1f} GFLOP/s = "
                f"{achieved / ceiling:.0%} of {ceiling:.1f} GFLOP/s, this machine's measured "
                f"{precision} matmul throughput"
            )
        if "bf16" in nll:
            print(
                f"  NLL fp32 {nll['fp32']:.4f}, bf16 {nll['bf16']:.4f}: difference "
                f"{nll['bf16'] - nll['fp32']:+.4f} nats (an untrained model's, on the same samples)"
            )


if __name__ == "__main__":
    main()
