"""Mini-batches by index over an in-memory tensor."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaelab.errors import VaelabError


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    start_batch: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """One epoch of index tensors (B,) over range(n), beginning at batch `start_batch`.

    With `shuffle`, one `torch.randperm(n, generator=generator)` is drawn per call on the CPU
    (pass a CPU generator for reproducible epochs) and moved to `device` in one copy.
    `drop_last` skips a final short batch.
    Resuming mid-epoch restores the generator's epoch-start state and passes `start_batch`.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise VaelabError(f"batch_size must be a positive integer, got {batch_size!r}")
    if generator is not None and generator.device.type != "cpu":
        raise VaelabError(
            f"batch_indices got a torch.Generator on {generator.device}; pass a CPU generator "
            "(the permutation is drawn on the CPU)"
        )
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    stop = n - n % batch_size if drop_last else n
    return (order[i : i + batch_size] for i in range(start_batch * batch_size, stop, batch_size))


def iterate_batches(
    x: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """One epoch of batches (B, ...) from x (N, ...): contiguous slices, or `x[idx]` gathers
    along a permutation when `shuffle` (see `batch_indices`)."""
    if not shuffle:
        stop = len(x) - len(x) % batch_size if drop_last else len(x)
        batch_indices(len(x), batch_size, shuffle=False)  # validates batch_size
        return (x[i : i + batch_size] for i in range(0, stop, batch_size))
    indices = batch_indices(
        len(x),
        batch_size,
        shuffle=True,
        generator=generator,
        drop_last=drop_last,
        device=x.device,
    )
    return (x[idx] for idx in indices)
