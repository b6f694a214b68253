"""Mini-batches by index over an in-memory tensor."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaelab.errors import VaelabError


def iterate_batches(
    x: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """One epoch of batches `x[idx]` (B, ...) from x (N, ...).

    With `shuffle`, one `torch.randperm(N, generator=generator)` is drawn per call on the CPU
    (pass a CPU generator for reproducible epochs) and its indices are moved to `x.device`.
    `drop_last` skips a final batch smaller than `batch_size`.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise VaelabError(f"batch_size must be a positive integer, got {batch_size!r}")
    if generator is not None and generator.device.type != "cpu":
        raise VaelabError("iterate_batches needs a CPU torch.Generator for the permutation")
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device) if shuffle else None
    return _batches(x, perm, batch_size, n - n % batch_size if drop_last else n)


def _batches(
    x: torch.Tensor, perm: torch.Tensor | None, batch_size: int, stop: int
) -> Iterator[torch.Tensor]:
    for start in range(0, stop, batch_size):
        if perm is None:
            yield x[start : start + batch_size]
        else:
            yield x[perm[start : start + batch_size]]
