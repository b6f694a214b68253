"""Training throughput of vaelab's trainer against two reference loops, in one run.

The model is the classic MNIST MLP VAE (784-400-20-400-784, Bernoulli decoder, Adam 1e-3).
For each batch size it prints samples/s of:
  vaelab     `vaelab.train` itself (the trainer `vaelab train` runs), timed per epoch
  minimal    the dataset as one float tensor, batches by a random permutation (about 20 lines)
  tutorial   a Dataset returning one PIL image at a time turned into a tensor, as torchvision's
             MNIST with ToTensor does, through a DataLoader (the pytorch/examples VAE)
  --amp      `vaelab.train` with bfloat16 networks (fp32 weights and loss), on a CPU with native
             bfloat16 (AVX512-BF16 or AMX); skipped elsewhere
and vaelab's achieved FLOP/s as a share of the matmul throughput this machine reaches on the
training's own matrix shapes, in fp32 and in bfloat16, measured in the same run.

    VAELAB_DATA=../shared/data python benchmarks/throughput.py [--epochs 3] [--batch-sizes 128 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import vaelab
from vaelab.training.metrics import read_metrics
from vaelab.training.precision import cpu_bf16_units, native_bf16

SIZES = (784, 400, 20)  # input, hidden, latent


class ReferenceVAE(nn.Module):
    """The pytorch/examples VAE (fc1, fc21, fc22, fc3, fc4), decoder returning logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def reference_loss(x_logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(x_logits, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kld) / x.shape[0]


def minimal_loop(x: torch.Tensor, batch_size: int, epochs: int) -> list[float]:
    """The in-memory reference loop; returns samples/s per epoch."""
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    speeds = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            batch = x[perm[i : i + batch_size]]
            x_logits, mu, logvar = model(batch)
            loss = reference_loss(x_logits, batch, mu, logvar)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        speeds.append(len(x) / (time.perf_counter() - start))
    return speeds


class TorchvisionStyleMNIST(Dataset):
    """What torchvision's MNIST(transform=ToTensor()) does per item: the uint8 tensor row as a
    PIL image, then ToTensor's conversion; returns (image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.data, self.targets = images, labels  # (N, 28, 28) uint8, (N,) int64

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], int(self.targets[index])
        pic = Image.fromarray(img.numpy(), mode="L")
        # torchvision.transforms.functional.to_tensor for a mode "L" image:
        tensor = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        tensor = tensor.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return tensor.to(dtype=torch.get_default_dtype()).div(255), target


class TutorialVAE(ReferenceVAE):
    """pytorch/examples' VAE exactly: the decoder ends in a sigmoid."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_logits, mu, logvar = super().forward(x)
        return torch.sigmoid(x_logits), mu, logvar


def tutorial_loop(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, epochs: int
) -> list[float]:
    """The pytorch/examples VAE training loop over a torchvision-style dataset."""
    loader = DataLoader(TorchvisionStyleMNIST(images, labels), batch_size=batch_size, shuffle=True)
    model = TutorialVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    speeds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        train_loss = 0
        for data, _ in loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon_batch, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        speeds.append(len(images) / (time.perf_counter() - start))
    return speeds


def vaelab_loop(batch_size: int, epochs: int, *, amp: bool = False) -> list[float]:
    config = vaelab.RunConfig().updated(
        {
            "model": {"latent_dim": 20, "hidden_dims": [400]},
            "data": {"dataset": "mnist", "val_fraction": 0.0},
            "train": {"epochs": epochs, "batch_size": batch_size, "device": "cpu", "amp": amp},
        }
    )
    with tempfile.TemporaryDirectory() as run_dir:
        vaelab.train(config, run_dir, progress=False)
        return [record["samples_per_second"] for record in read_metrics(run_dir)]


def flops_per_sample() -> float:
    """Matmul FLOPs of one training sample: forward 2*in*out per layer, backward twice that,
    except the first layer, whose input needs no gradient."""
    n_in, hidden, latent = SIZES
    layers = [(n_in, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, n_in)]
    forward = sum(2 * a * b for a, b in layers)
    backward = 2 * forward - 2 * n_in * hidden
    return forward + backward


def matmul_samples_per_second(
    batch_size: int, repeats: int = 50, dtype: torch.dtype = torch.float32
) -> float:
    """Samples/s if a training step were only its matmuls (the forward, input-gradient and
    weight-gradient products of every layer, at this batch size), in `dtype`."""
    n_in, hidden, latent = SIZES
    layers = [(n_in, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, n_in)]
    products = []
    for i, (a, b) in enumerate(layers):
        x, w, g = (
            torch.randn(batch_size, a, dtype=dtype),
            torch.randn(a, b, dtype=dtype),
            torch.randn(batch_size, b, dtype=dtype),
        )
        products.append((x, w))  # forward: (B, a) @ (a, b)
        products.append((x.T.contiguous(), g))  # weight gradient: (a, B) @ (B, b)
        if i > 0:
            products.append((g, w.T.contiguous()))  # input gradient: (B, b) @ (b, a)
    for left, right in products:  # warm up
        torch.mm(left, right)
    start = time.perf_counter()
    for _ in range(repeats):
        for left, right in products:
            torch.mm(left, right)
    return repeats * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop (first is warm-up)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (default: 2; the README's figures used 2, this machine's "
        "cores); set, since torch's default can run 100x slower on a busy machine",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    amp = native_bf16(torch.device("cpu"))

    data = vaelab.load_data(vaelab.DataConfig(dataset="mnist", val_fraction=0.0), progress=False)
    x = data.train.x  # (60000, 1, 28, 28) float32
    images = (x[:, 0] * 255).round().to(torch.uint8)  # as torchvision holds MNIST
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(x)} images")
    print(f"bfloat16 units: {cpu_bf16_units()}" + ("" if amp else "; the --amp rows are skipped"))

    def best(speeds: list[float]) -> float:  # median of the epochs after the first
        return statistics.median(speeds[1:] if len(speeds) > 1 else speeds)

    for batch_size in args.batch_sizes:
        ours = best(vaelab_loop(batch_size, args.epochs))
        minimal = best(minimal_loop(x, batch_size, args.epochs))
        ours_amp = best(vaelab_loop(batch_size, args.epochs, amp=True)) if amp else None
        tutorial = (
            None if args.skip_tutorial else best(tutorial_loop(images, data.train.y, batch_size, 2))
        )
        ceiling = matmul_samples_per_second(batch_size)
        print(f"\nbatch {batch_size}")
        print(f"  vaelab     {ours:9.0f} samples/s")
        print(f"  minimal    {minimal:9.0f} samples/s   vaelab/minimal  = {ours / minimal:.2f}x")
        if tutorial is not None:
            print(
                f"  tutorial   {tutorial:9.0f} samples/s   vaelab/tutorial = {ours / tutorial:.2f}x"
            )
        if ours_amp is not None:
            print(
                f"  --amp      {ours_amp:9.0f} samples/s   --amp/minimal   = "
                f"{ours_amp / minimal:.2f}x   --amp/vaelab = {ours_amp / ours:.2f}x"
            )
        print(f"  vaelab achieves {_share(ours, ceiling)} of the fp32 matmuls")
        if ours_amp is not None:
            bf16_ceiling = matmul_samples_per_second(batch_size, dtype=torch.bfloat16)
            print(f"  --amp achieves {_share(ours_amp, bf16_ceiling)} of the bfloat16 matmuls")


def _share(speed: float, ceiling: float) -> str:
    """`speed` (samples/s) as GFLOP/s and as a share of the matmuls-only `ceiling`."""
    achieved = speed * flops_per_sample() / 1e9
    peak = ceiling * flops_per_sample() / 1e9
    return (
        f"{achieved:.1f} GFLOP/s = {speed / ceiling:.0%} of {peak:.1f} GFLOP/s "
        f"({ceiling:.0f} samples/s)"
    )


if __name__ == "__main__":
    main()
