"""A second view of a run's codes for latent spaces of more than two dimensions: a t-SNE map
(van der Maaten & Hinton 2008, scikit-learn's), which keeps neighbourhoods where the PCA plane
keeps the two widest directions. It has no inverse, so the page decodes the code of the nearest
point rather than a point of a plane."""

from __future__ import annotations

import torch
from sklearn.manifold import TSNE

TSNE_SEED = 0
MIN_POINTS = 5  # fewer points have no neighbourhoods to keep


def tsne_points(codes: torch.Tensor) -> torch.Tensor:
    """Codes (M, D) -> their t-SNE map (M, 2) float32, the same for the same codes. Raises
    ValueError for fewer than MIN_POINTS codes."""
    m = len(codes)
    if m < MIN_POINTS:
        raise ValueError(f"a t-SNE map needs at least {MIN_POINTS} codes, this run has {m}")
    tsne = TSNE(
        n_components=2,
        perplexity=min(30.0, (m - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=TSNE_SEED,
    )
    return torch.from_numpy(tsne.fit_transform(codes.double().numpy())).float()
