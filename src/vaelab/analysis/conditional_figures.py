"""The image grids of conditional models (cvae, m2): samples of every class, analogies, and
completions of partly observed images. Each returns images (N, C, H, W), row by row, on the
model's device; `vaelab.figures.save_image_grid` draws them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models import Autoencoder


def completes_images(model: Autoencoder) -> bool:
    """Whether `model` is conditional on the observed quadrants of its images (a cvae trained
    with --observe), not on a class label."""
    return model.conditional and bool(model.config.observe)


def check_label_model(model: Autoencoder, what: str) -> None:
    """A one-line VaelabError unless `model` is conditional on a class label; `what` names the
    figure or flag that needs one."""
    if model.needs_labels:
        return
    if completes_images(model):
        raise VaelabError(
            f"{what} needs a run conditional on class labels; this cvae was trained with "
            f"--observe {model.config.observe}: draw its completions with vaelab complete"
        )
    raise VaelabError(
        f"{what} needs a run conditional on class labels (--model cvae or m2); this run is a "
        f"{model.config.model}"
    )


def _generator(model: Autoencoder, seed: int) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(seed)


@torch.inference_mode()
def class_grid(model: Autoencoder, per_class: int, *, seed: int) -> Tensor:
    """`per_class` samples of every class, (K * per_class, C, H, W): row i, images
    i * per_class to (i + 1) * per_class - 1, is drawn with the label i."""
    check_label_model(model, "a grid of samples per class")
    if per_class < 1:
        raise VaelabError(f"per_class must be at least 1, got {per_class}")
    y = torch.arange(model.classes, device=model.device).repeat_interleave(per_class)
    return model.sample(len(y), y=y, generator=_generator(model, seed))


@torch.inference_mode()
def analogy_grid(model: Autoencoder, x: Tensor, y: Tensor) -> Tensor:
    """Style and class apart (Kingma et al. 2014, fig. 1): each image of x (B, C, H, W),
    encoded once with its label y (B,) (an m2 infers a label of -1), then decoded with every
    label 0 .. K-1. Returns (B * (K + 1), C, H, W), row by row: the image, then its code
    decoded as class 0, 1, ..., K-1."""
    check_label_model(model, "an analogy grid")
    x = x.to(model.device, model.dtype)
    if len(x) != len(torch.as_tensor(y)):
        raise VaelabError(f"pass one label per image: {len(y)} for {len(x)} images")
    z = model.encode(x, torch.as_tensor(y, device=model.device)).mode()  # (B, D)
    classes = model.classes
    every_label = torch.arange(classes, device=model.device).repeat(len(x))  # (B * K,)
    decoded = model.decode(z.repeat_interleave(classes, dim=0), every_label)
    decoded = decoded.view(len(x), classes, *x.shape[1:])  # (B, K, C, H, W)
    return torch.cat([x[:, None], decoded], dim=1).flatten(0, 1)


def observed_part(model: Autoencoder, x: Tensor, *, fill: float = 0.5) -> Tensor:
    """x (B, C, H, W) with the pixels `model` does not observe set to `fill` (mid-grey for
    data in [0, 1])."""
    mask = model.condition.mask.to(x.device)  # (C, H, W), True where observed
    return torch.where(mask, x, torch.full_like(x, fill))


@torch.inference_mode()
def completion_grid(
    model: Autoencoder, x: Tensor, n: int, *, seed: int, fill: float = 0.5
) -> Tensor:
    """n completions of each image of x (B, C, H, W) by a model trained with --observe:
    (B * (n + 1), C, H, W), row by row: the observed part (the rest `fill`), then n images
    that keep it and draw the unobserved part from p(x_unobserved | z, x_observed)."""
    if not completes_images(model):
        raise VaelabError(
            "completing images needs a cvae trained with --observe QUADRANTS; this run is "
            + ("conditional on class labels" if model.conditional else f"a {model.config.model}")
        )
    if n < 1:
        raise VaelabError(f"n must be at least 1, got {n}")
    x = x.to(model.device, model.dtype)
    completions = model.complete(x, n, generator=_generator(model, seed))  # (n, B, C, H, W)
    shown = observed_part(model, x, fill=fill)[:, None]  # (B, 1, C, H, W)
    return torch.cat([shown, completions.transpose(0, 1)], dim=1).flatten(0, 1)
