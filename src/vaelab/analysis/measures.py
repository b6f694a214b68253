"""Measures of a latent space and its decoder, as pure functions on tensors.

Each function's docstring states its definition; `DEFINITIONS` holds the one-sentence versions
that reports print beside the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

CONFIDENT = 0.9  # a decoding counts as recognised when the classifier gives a class >= this

DEFINITIONS: dict[str, str] = {
    "decodable": (
        f"fraction of decoded random codes that the classifier assigns to one class with "
        f"probability >= {CONFIDENT} (higher: more random codes decode to recognisable images)"
    ),
    "confidence": "mean over decoded codes of the classifier's largest class probability",
    "entropy": "mean entropy (nats) of the classifier's class probabilities for the decodings",
    "gap_fraction": (
        "fraction of points drawn uniformly from the bounding box of the training codes that are "
        "farther from every training code than the median nearest-neighbour distance between "
        "training codes (about 0.5 for a box filled uniformly at random, 0 for a regular grid, "
        "near 1 when the codes sit in a few tight clusters)"
    ),
    "jump": (
        "along a straight line between the codes of two test images, decoded at evenly spaced "
        "points, the largest pixel-space L2 distance between consecutive frames divided by the "
        "sum of all of them (the path length): 1/(steps-1) when the images change evenly, 1 when "
        "all the change happens in one step; 0 for a path that does not change"
    ),
    "midpoint_confidence": (
        "mean largest class probability of the classifier for the decoding of the midpoint "
        "between the codes of two test images"
    ),
    "frechet": (
        "Frechet distance between Gaussians fitted to the classifier's penultimate-layer features "
        "of generated samples and of test images, ||mu_a - mu_b||^2 + "
        "Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017, an MNIST-scale FID; biased "
        "upwards at small sample sizes, so compare numbers with equal sample counts)"
    ),
}


@dataclass(frozen=True)
class Decodability:
    """How recognisable a set of decodings is to a classifier."""

    fraction: float  # share with largest probability >= threshold
    confidence: float  # mean largest probability
    entropy: float  # mean entropy, nats


def decodability(probs: Tensor, *, threshold: float = CONFIDENT) -> Decodability:
    """Class probabilities (N, K) -> the fraction of rows whose largest probability is at least
    `threshold`, the mean largest probability and the mean entropy -sum_k p_k log p_k (nats)."""
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be a non-empty (N, K) tensor, got {tuple(probs.shape)}")
    confident = probs.max(dim=1).values >= threshold  # in the input's dtype: 0.9 >= 0.9
    probs = probs.double()
    top = probs.max(dim=1).values  # (N,)
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(dim=1)  # 0 log 0 = 0
    return Decodability(
        fraction=float(confident.double().mean()),
        confidence=float(top.mean()),
        entropy=float(entropy.mean()),
    )


def nearest_distances(
    points: Tensor, codes: Tensor, *, exclude_self: bool = False, chunk: int = 1024
) -> Tensor:
    """For each of `points` (M, D), the Euclidean distance to its nearest row of `codes` (N, D):
    (M,). With `exclude_self`, points are the codes themselves and each skips its own row."""
    if exclude_self and points.shape != codes.shape:
        raise ValueError("exclude_self needs points to be the codes themselves")
    points, codes = points.double(), codes.double()
    nearest = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], codes)  # (chunk, N)
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + start] = math.inf
        nearest.append(d.min(dim=1).values)
    return torch.cat(nearest) if nearest else torch.zeros(0, dtype=torch.float64)


def median_nn_distance(codes: Tensor) -> float:
    """The median over codes (N, D), N >= 2, of the distance to the nearest other code."""
    if len(codes) < 2:
        raise ValueError("the median nearest-neighbour distance needs at least 2 codes")
    return float(nearest_distances(codes, codes, exclude_self=True).median())


def gap_fraction(train_codes: Tensor, box_points: Tensor) -> float:
    """The fraction of `box_points` (M, D) farther from every one of `train_codes` (N, D) than
    the median nearest-neighbour distance between the training codes (self-distances excluded).

    For codes scattered uniformly at random this is about 0.5 (for a Poisson process, the chance
    that a ball of the median nearest-neighbour radius is empty is exp(-ln 2)); for a regular
    grid it is 0; for a few tight, distant clusters in a large box it approaches 1.
    """
    radius = median_nn_distance(train_codes)
    return float((nearest_distances(box_points, train_codes) > radius).double().mean())


def interpolation_smoothness(
    decode_fn: Callable[[Tensor], Tensor], z_a: Tensor, z_b: Tensor, steps: int
) -> Tensor:
    """The largest pixel-space jump along each straight path, relative to the path's length.

    z_a, z_b: (P, D) path ends. Each path is decoded at `steps` evenly spaced points
    z_a + t (z_b - z_a), t = 0, 1/(steps-1), ..., 1; with d_i the L2 distance between frames i
    and i+1, the result is max_i d_i / sum_i d_i, (P,). It is 1/(steps-1) when the frames change
    evenly, 1 when one step holds all the change, and 0 (by definition) for a constant path.
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"z_a and z_b must both be (P, D), got {z_a.shape} and {z_b.shape}")
    t = torch.linspace(0.0, 1.0, steps, dtype=z_a.dtype, device=z_a.device)  # (T,)
    path = z_a[:, None] + t[None, :, None] * (z_b - z_a)[:, None]  # (P, T, D)
    frames = decode_fn(path.flatten(0, 1))  # (P * T, C, H, W)
    frames = frames.reshape(len(z_a), steps, -1).double()  # (P, T, C*H*W)
    d = (frames[:, 1:] - frames[:, :-1]).norm(dim=2)  # (P, T - 1)
    length = d.sum(dim=1)
    largest = d.max(dim=1).values
    tiny = torch.finfo(torch.float64).tiny
    return torch.where(length > tiny, largest / length.clamp_min(tiny), torch.zeros_like(length))


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two
    feature sets (N_a, F) and (N_b, F) (Frechet 1957; as FID, Heusel et al. 2017), in float64.

    Tr (S_a S_b)^(1/2) is computed as the sum of the square roots of the eigenvalues of the
    symmetric S_a^(1/2) S_b S_a^(1/2), which has the same spectrum and needs no complex sqrtm.
    """
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"features must be (N, F) with equal F: {feats_a.shape}, {feats_b.shape}")
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError("a Frechet distance needs at least 2 samples on each side")
    a, b = feats_a.double(), feats_b.double()
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(value), 0.0)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """The symmetric square root of a positive semi-definite matrix."""
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T
