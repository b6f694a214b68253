"""Data-parallel training with torch.distributed: the process group torchrun describes.

Run `torchrun --nproc_per_node=N -m vaelab train ...`; torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and `train` joins the group (gloo on CPU, nccl on
CUDA). Without torchrun everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vaelab.errors import VaelabError
from vaelab.training.runs import resolve_device


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group: rank r of `world_size` processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over all processes (in place; returned)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any of them."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Every process's copy of a small dict (RNG states, partial sums), in rank order."""
        if not self.enabled:
            return [item]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, item)
        return gathered


def process_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun)."""
    return _env_int("RANK", 0)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise VaelabError(f"environment variable {name}={value!r} is not a whole number") from None


@contextmanager
def distributed(device_name: str) -> Iterator[Distributed]:
    """Join torchrun's process group for the duration of a training run (if there is one)."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        yield Distributed(device=resolve_device(device_name))
        return
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    try:
        yield Distributed(rank=rank, world_size=world_size, device=device)
        if owns_group:  # every rank done communicating before any tears its transport down
            dist.barrier()
    finally:
        if owns_group:
            dist.destroy_process_group()


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's share of one global batch: every world_size-th index from `rank`.

    Over all ranks the shares partition the batch, so an epoch covers every example once.
    """
    return indices[rank::world_size]
