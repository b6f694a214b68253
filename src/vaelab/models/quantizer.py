"""Vector quantisation (van den Oord, Vinyals & Kavukcuoglu 2017): each D-dimensional vector of
the encoder's (h, w) grid is replaced by its nearest entry of a codebook of K entries.

The codebook learns in one of two ways:
- "loss": the codebook loss ||sg[z_e] - e||^2 moves the entries by gradient (the paper's eq. 3);
- "ema": exponential moving averages of the vectors assigned to each entry (the paper's
  appendix A.1, decay 0.99), with no gradient to the codebook.
Both use the commitment loss beta * ||z_e - sg[e]||^2 on the encoder, and both restart dead
entries (those left unused for a while) at encoder outputs of the current batch, which keeps
the codebook in use (as in Dhariwal et al. 2020, Jukebox, section 3.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vaelab.models.distributions import at_least_float32

UPDATES = ("loss", "ema")
EMA_DECAY = 0.99  # the paper's appendix A.1
EMA_EPSILON = 1e-5  # Laplace smoothing of the entries' counts (no division by zero)
USAGE_DECAY = 0.9  # of the average number of vectors an entry takes per step
DEAD_SHARE = 0.03  # an entry unused in this step whose average is under 3% of a fair share
# (N/K of the N vectors of a step) is dead: unused, that takes log(0.03)/log(0.9) = 33 steps.
# On MNIST (N = 128 * 49, K = 128) the threshold is 1.5 vectors per step, near Jukebox's 1
# (Dhariwal et al. 2020).


@dataclass(frozen=True)
class Quantized:
    """The quantiser's output for a grid of B x h x w vectors of size D."""

    z_q: Tensor  # (B, D, h, w) the chosen entries, with straight-through gradients to z_e
    indices: Tensor  # (B, h, w) int64: the chosen entries' numbers
    codebook_loss: Tensor  # (B,) sum over the grid of ||sg[z_e] - e||^2 (0 for "ema")
    commitment_loss: Tensor  # (B,) sum over the grid of ||z_e - sg[e]||^2


class VectorQuantizer(nn.Module):
    """A codebook of `size` entries of `dim` values, and nearest-entry quantisation."""

    def __init__(self, size: int, dim: int, *, update: str = "ema") -> None:
        super().__init__()
        self.size, self.dim, self.update = size, dim, update
        initial = torch.empty(size, dim).uniform_(-1.0 / size, 1.0 / size)  # as the paper's code
        if update == "ema":  # updated by averages, not by the optimiser
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.zeros(size))
            self.register_buffer("ema_sum", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)
        self.register_buffer("usage", torch.zeros(size))  # vectors per step, averaged
        # Set at the first training step, which starts every entry on an encoder output:
        # the paper's tiny uniform start leaves most entries far from every output at first.
        self.register_buffer("started", torch.tensor(False))

    def nearest(self, vectors: Tensor) -> Tensor:
        """The number of the nearest entry of each of vectors (N, D): (N,) int64. The
        distances are fp32 or wider, also under bfloat16 autocast, which would pick the wrong
        entries of codebooks whose entries are close together."""
        with torch.autocast(vectors.device.type, enabled=False):
            vectors, codebook = at_least_float32(vectors, self.codebook.detach())
            distances = (
                vectors.pow(2).sum(1, keepdim=True)
                - 2 * vectors @ codebook.T
                + codebook.pow(2).sum(1)[None, :]
            )  # (N, K) squared Euclidean distances
            return distances.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """The entries of an index grid (B, h, w), as vectors (B, D, h, w)."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    def forward(
        self, z_e: Tensor, *, learn: bool = False, generator: torch.Generator | None = None
    ) -> Quantized:
        """Quantise the encoder's grid z_e (B, D, h, w). With `learn` (the training loss's call)
        this also updates the EMA codebook and the usage averages, and restarts dead entries
        (drawing with `generator`); otherwise it changes nothing."""
        batch, dim, height, width = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D)
        with torch.autocast(z_e.device.type, enabled=False):
            # float32 or wider (the codebook's dtype): distances of bfloat16 vectors would
            # pick the wrong entries
            (flat32,) = at_least_float32(flat.to(self.codebook.dtype))
            finite = flat32.detach().isfinite().all(dim=1)  # a NaN never enters the codebook
            if learn and not bool(self.started):
                self._start(flat32.detach()[finite], generator)
            indices = self.nearest(flat32)  # (N,)
            if learn:
                self._learn(flat32.detach()[finite], indices[finite], generator)
            chosen = self.codebook[indices].to(flat32.dtype)  # (N, D), after any update
            commitment = (flat32 - chosen.detach()).pow(2).reshape(batch, -1).sum(1)
            if self.update == "loss":
                codebook_loss = (flat32.detach() - chosen).pow(2).reshape(batch, -1).sum(1)
            else:
                codebook_loss = torch.zeros_like(commitment)
        z_q = flat + (chosen.to(flat.dtype) - flat).detach()  # straight-through estimator
        return Quantized(
            z_q=z_q.view(batch, height, width, dim).permute(0, 3, 1, 2),
            indices=indices.view(batch, height, width),
            codebook_loss=codebook_loss,
            commitment_loss=commitment,
        )

    @torch.no_grad()
    def _start(self, vectors: Tensor, generator: torch.Generator | None) -> None:
        """Put every entry on a random encoder output of the first training batch."""
        self._replace(
            torch.ones(self.size, dtype=torch.bool, device=vectors.device), vectors, generator
        )
        self.started.fill_(True)

    @torch.no_grad()
    def _learn(self, vectors: Tensor, indices: Tensor, generator: torch.Generator | None) -> None:
        """One training step's update of the codebook's statistics (no gradients)."""
        counts = torch.bincount(indices, minlength=self.size).to(vectors.dtype)  # (K,)
        sums = vectors.new_zeros(self.size, self.dim).index_add_(0, indices, vectors)  # (K, D)
        if dist.is_available() and dist.is_initialized():  # every rank's vectors, the same update
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.usage.mul_(USAGE_DECAY).add_(counts, alpha=1 - USAGE_DECAY)
        if self.update == "ema":  # appendix A.1: N_i, m_i averaged, e_i = m_i / N_i
            self.ema_count.mul_(EMA_DECAY).add_(counts, alpha=1 - EMA_DECAY)
            self.ema_sum.mul_(EMA_DECAY).add_(sums, alpha=1 - EMA_DECAY)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + EMA_EPSILON) / (total + self.size * EMA_EPSILON) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self._restart_dead(vectors, counts, generator)

    def _restart_dead(
        self, vectors: Tensor, counts: Tensor, generator: torch.Generator | None
    ) -> None:
        """Move each dead entry onto a random vector of this batch (rank 0's, under DDP).
        Entries used in this step are kept: their vectors already point at them."""
        fair_share = float(counts.sum()) / self.size
        dead = (self.usage < DEAD_SHARE * fair_share) & (counts == 0)
        if bool(dead.any()):
            self._replace(dead, vectors, generator)

    def _replace(self, which: Tensor, vectors: Tensor, generator: torch.Generator | None) -> None:
        """Put the entries `which` (K,) bool onto random rows of vectors (N, D)."""
        distributed = dist.is_available() and dist.is_initialized()
        if len(vectors) == 0 and not distributed:  # every vector of the step was non-finite
            return
        shape = (int(which.sum()), self.dim)
        if len(vectors):
            device = vectors.device
            picks = torch.randint(len(vectors), shape[:1], generator=generator, device=device)
            fresh = vectors[picks].to(self.codebook.dtype)
        else:  # a rank must still join the broadcast; rank 0's entries are the ones kept
            fresh = self.codebook.new_zeros(shape)
        if distributed:  # the same entries on every rank
            dist.broadcast(fresh, src=0)
        codebook = self.codebook.data if isinstance(self.codebook, nn.Parameter) else self.codebook
        codebook[which] = fresh
        ranks = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.usage[which] = len(vectors) * ranks / self.size  # a fair share: alive 33 steps
        if self.update == "ema":
            self.ema_count[which] = 1.0
            self.ema_sum[which] = fresh


def perplexity(indices: Tensor, size: int) -> float:
    """exp of the entropy of the entries' usage over `indices`: the effective number of entries
    used (K when all are used equally, 1 when one is)."""
    counts = torch.bincount(indices.flatten(), minlength=size).double()
    p = counts / counts.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum()))


def usage_share(indices: Tensor, size: int) -> float:
    """The share of the codebook's entries used at least once in `indices`."""
    return float(torch.unique(indices).numel() / size)


def code_bits(grid: tuple[int, int], size: int) -> float:
    """log p(z) of every code under the uniform prior, in nats: -h w log K."""
    return -math.prod(grid) * math.log(size)
