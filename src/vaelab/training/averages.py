"""Loss terms averaged over examples: the running sums of an epoch, and their means."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.models import LossTerms
from vaelab.training.distributed import Distributed


@dataclass(frozen=True)
class LossMeans:
    """Loss terms averaged over examples, in nats per example (`LossTerms`, as plain floats)."""

    total: float
    recon: float
    kl: float

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.total, self.recon, self.kl))

    def record(self, split: str) -> dict[str, float]:
        """The metrics.jsonl entries of `split`: {"train/loss": total, "train/recon": ...}."""
        return {f"{split}/loss": self.total, f"{split}/recon": self.recon, f"{split}/kl": self.kl}


@dataclass
class RunningSums:
    """Sums of the (total, recon, kl) loss terms over the examples seen so far, and their count.

    `terms` stays on the training device, so adding a batch costs no host-device sync.
    """

    terms: torch.Tensor  # (3,) float32: (total, recon, kl), each summed over examples
    count: int = 0  # examples in the sums

    @classmethod
    def zeros(cls, device: torch.device | str = "cpu") -> RunningSums:
        return cls(torch.zeros(3, device=device))

    def add(self, terms: LossTerms, n: int) -> None:
        """Add the batch means `terms` of n examples (in place)."""
        self.terms += torch.stack([terms.total, terms.recon, terms.kl]).detach().float() * n
        self.count += n

    def add_means(self, means: LossMeans, n: int) -> None:
        """Add the means of n examples computed elsewhere (in place)."""
        values = [means.total * n, means.recon * n, means.kl * n]
        self.terms += torch.tensor(values, device=self.terms.device)
        self.count += n

    def is_finite(self) -> bool:
        return bool(self.terms.isfinite().all())

    def means(self) -> LossMeans:
        """The mean of each term over the examples (zeros before any were added)."""
        return LossMeans(*(self.terms / max(self.count, 1)).tolist())

    def reduced(self, group: Distributed) -> RunningSums:
        """The sums over the examples of every process of the group (one all-reduce)."""
        count = torch.tensor([float(self.count)], device=self.terms.device)
        both = group.sum(torch.cat([self.terms, count]))  # (4,): the terms, then the count
        return RunningSums(both[:3], int(both[3].item()))
