"""Latent codes of a dataset and images of codes, batched; their projection to a plane."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelab.data import iterate_batches
from vaelab.errors import VaelabError
from vaelab.models import Autoencoder

PROJECTIONS = ("pca", "tsne")
DECODE_BATCH = 1024


def encode_dataset(
    model: Autoencoder,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """The code of every example: the posterior mean (mu for a VAE). x (N, C, H, W) -> (N, D),
    on the CPU; batched under inference mode, on the model's device. y (N,): the labels a
    model conditional on them encodes with, q(z|x, y)."""
    codes = []
    with torch.inference_mode():
        for i, batch in enumerate(iterate_batches(x, batch_size, shuffle=False)):
            batch = batch.to(model.device)
            if y is None:
                posterior = model.encode(batch)
            else:
                labels = y[i * batch_size : (i + 1) * batch_size].to(model.device)
                posterior = model.encode(batch, labels)
            codes.append(posterior.mean.float().cpu())
    if not codes:
        return torch.zeros(0, model.config.latent_dim)
    return torch.cat(codes)


def decode_codes(
    model: Autoencoder,
    z: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    batch_size: int = DECODE_BATCH,
) -> torch.Tensor:
    """The image of every code: z (N, D) -> (N, C, H, W) float32 on the CPU; batched under
    inference mode, on the model's device and in its dtype. A conditional model decodes
    every code with one condition y: a label (1,), or an image (1, C, H, W) holding the
    observed part."""
    if len(z) == 0:
        return torch.zeros(0, *model.config.data_shape)
    with torch.inference_mode():
        images = []
        for chunk in z.split(batch_size):
            chunk = chunk.to(model.device, model.dtype)
            if y is None:
                images.append(model.decode(chunk).float().cpu())
            else:
                condition = y.to(model.device).expand(len(chunk), *y.shape[1:])
                images.append(model.decode(chunk, condition).float().cpu())
    return torch.cat(images)


@dataclass(frozen=True)
class Plane:
    """An affine map from the latent space to a plane and back: z ≈ center + p @ axes.

    For a 2-D latent space it is the identity; otherwise the first two principal axes of
    the codes it was fitted on (the other directions held at the mean on the way back).
    """

    center: torch.Tensor  # (D,)
    axes: torch.Tensor  # (2, D), orthonormal rows
    scales: torch.Tensor  # (2,) standard deviation of the codes along each axis

    @classmethod
    def fit(cls, codes: torch.Tensor) -> Plane:
        """Fit to codes (N, D), D >= 2.

        A principal axis is only defined up to its sign, and an SVD may return either; so each
        axis is turned to make its largest-magnitude loading positive (the rule of
        scikit-learn's `svd_flip`). The plane then depends on the set of codes alone, not on
        their order, and a subset of the same codes gives the same orientation.
        """
        if codes.ndim != 2 or codes.shape[1] < 2:
            raise VaelabError("a latent plane needs codes with at least 2 dimensions")
        codes = codes.double()
        dim = codes.shape[1]
        if dim == 2:
            center = torch.zeros(2, dtype=torch.float64)
            axes = torch.eye(2, dtype=torch.float64)
        else:
            center = codes.mean(dim=0)
            # Principal axes from the SVD of the centred codes (Pearson 1901).
            _, _, vh = torch.linalg.svd(codes - center, full_matrices=False)
            axes = vh[:2]  # (2, D)
            largest = axes.gather(1, axes.abs().argmax(dim=1, keepdim=True))  # (2, 1)
            axes = axes * torch.where(largest < 0, -1.0, 1.0).to(axes)
        projected = (codes - center) @ axes.T
        scales = projected.std(dim=0) if len(codes) > 1 else torch.ones(2, dtype=torch.float64)
        return cls(center.float(), axes.float(), scales.float())

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, 2)."""
        return (codes.float() - self.center) @ self.axes.T

    def lift(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 2) -> (N, D): points of the plane back in the latent space."""
        return self.center + points.float() @ self.axes


def latent_plane(codes: torch.Tensor) -> Plane:
    """The one plane a run's codes (N, D) are drawn on, by every figure and the explorer.

    Fitted once on all the codes of the split shown (never a subsample, so the latent map, the
    manifold and the explorer agree): the identity for D = 2, the first two principal axes for
    D > 2 (see `Plane.fit`), and the line (z, 0) for D = 1.
    """
    if codes.ndim == 2 and codes.shape[1] == 1:
        return Plane(torch.zeros(1), torch.tensor([[1.0], [0.0]]), torch.ones(2))
    return Plane.fit(codes)


def project_2d(codes: torch.Tensor, method: str = "pca", *, seed: int = 0) -> torch.Tensor:
    """Codes (N, D) as (N, 2) points to draw: the codes themselves when D == 2, else PCA or
    t-SNE (van der Maaten & Hinton 2008, via scikit-learn)."""
    if method not in PROJECTIONS:
        raise VaelabError(f"unknown projection '{method}': use one of {', '.join(PROJECTIONS)}")
    if codes.shape[1] == 1:
        return torch.cat([codes.float(), torch.zeros_like(codes, dtype=torch.float32)], dim=1)
    if codes.shape[1] == 2 or method == "pca":
        return Plane.fit(codes).project(codes)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(codes) - 1) / 3))
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca")
    return torch.from_numpy(points.fit_transform(codes.double().numpy())).float()
