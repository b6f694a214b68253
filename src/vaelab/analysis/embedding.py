"""The codes of a dataset for other tools: posterior means, standard deviations and samples of
every image, batched, and saved as .npy, .npz or .csv."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.analysis.evaluate import image_seed
from vaelab.errors import VaelabError, plural
from vaelab.files import atomic_path, check_folder_of, write_error
from vaelab.models import Autoencoder
from vaelab.models.distributions import DiagonalGaussian, Posterior

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 256
FORMATS = (".npy", ".npz", ".csv")  # see `save_embedding`
_KINDS = ".npy (the means), .npz (means, stds, samples, labels) or .csv (a table)"


@dataclass(frozen=True)
class Embedding:
    """The posterior q(z|x) of every image, in the images' order, on the CPU in float32.

    `std` is None for a model whose code is a point (ae, dae); `samples` is None unless drawn;
    `labels` is None for data without labels.
    """

    mean: Tensor  # (N, D): the code, mu for a VAE
    std: Tensor | None  # (N, D): sigma = exp(logvar / 2)
    samples: Tensor | None  # (N, S, D): z ~ q(z|x), S per image
    labels: Tensor | None  # (N,) int64 class labels

    def __len__(self) -> int:
        return len(self.mean)

    @property
    def dim(self) -> int:
        """D, the latent size."""
        return self.mean.shape[1]

    def contents(self, *, means: bool = True) -> str:
        """What it holds, in words: "means, standard deviations, 5 samples each and labels"
        (without "means" when `means` is False)."""
        held = ["means"] if means else []
        if self.std is not None:
            held.append("standard deviations")
        if self.samples is not None:
            held.append(f"{plural(self.samples.shape[1], 'sample')} each")
        if self.labels is not None:
            held.append("labels")
        return ", ".join(held[:-1]) + " and " + held[-1] if len(held) > 1 else "".join(held)


def embed(
    model: Autoencoder,
    images: Tensor,
    *,
    batch_size: int = DEFAULT_BATCH,
    samples: int = 0,
    seed: int = 0,
    progress: bool = False,
    y: Tensor | None = None,
) -> Embedding:
    """q(z|x) of every image x of `images` (N, C, H, W), in batches of `batch_size` under
    inference mode on the model's device; the results are on the CPU.

    `samples` S > 0 also draws S codes z ~ q(z|x) per image, each image from its own seed
    (derived from `seed` and its index, as `vaelab.evaluate` does), so the draws do not depend
    on `batch_size`. `y` (N,) are the images' labels: kept in the result, and passed to
    `model.encode` as its condition. A model without a prior (ae, dae) has no spread to
    report or sample: its `std` is None and `samples` > 0 is an error.
    """
    model.check_images(images)
    n = len(images)
    if n == 0:
        raise VaelabError("there are no images to embed")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise VaelabError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise VaelabError(f"samples must be a whole number >= 0, got {samples!r}")
    if samples and not model.stochastic_encoder:
        raise VaelabError(
            f"samples={samples}, but the codes of a {model.title} are points, not "
            "distributions: there is nothing to sample"
        )
    if y is not None and tuple(y.shape) != (n,):
        raise VaelabError(f"y must hold one label per image, ({n},), got {tuple(y.shape)}")
    d = model.config.latent_dim
    # Allocated first, so that a size too large for memory fails before the long pass.
    mean = torch.empty(n, d)
    std = torch.empty(n, d) if model.stochastic_encoder else None
    drawn = torch.empty(n, samples, d) if samples else None
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=n, unit="img", desc="encoding", disable=not progress, leave=False) as bar,
        ):
            generator = torch.Generator(device=model.device)
            for start in range(0, n, batch_size):
                part = slice(start, min(start + batch_size, n))
                batch = images[part].to(model.device, model.dtype)  # (B, C, H, W)
                condition = None if y is None else y[part].to(model.device)
                posterior = model.encode(batch, condition)
                mean[part] = posterior.mean.float().cpu()
                if not isinstance(posterior, DiagonalGaussian):
                    std = None  # a flow's or a hierarchy's q has no one std per dimension
                if std is not None:
                    std[part] = _std(posterior)
                if drawn is not None:
                    drawn[part] = _draw(posterior, samples, start, seed, generator)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    labels = None if y is None else y.detach().to("cpu", torch.int64)
    return Embedding(mean=mean, std=std, samples=drawn, labels=labels)


def _std(posterior: DiagonalGaussian) -> Tensor:
    return posterior.std.float().cpu()


def _draw(
    posterior: Posterior,
    samples: int,
    first_index: int,
    seed: int,
    generator: torch.Generator,
) -> Tensor:
    """(B, S, D) codes z ~ q(z|x), image i of the batch from the seed of image first_index + i."""
    draws = []
    for i in range(len(posterior)):
        generator.manual_seed(image_seed(seed, first_index + i))
        draws.append(posterior[i : i + 1].rsample(k=samples, generator=generator))  # (S, 1, D)
    return torch.cat(draws, dim=1).transpose(0, 1).float().cpu()


# --- saving -------------------------------------------------------------------------------------


def check_output(path: str | Path) -> Path:
    """`path` as a Path, or a one-line error unless it names a .npy, .npz or .csv file in an
    existing folder this process can write to. Cheap: call it before the work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise VaelabError(f"cannot write {path}: it is a folder; name a {_KINDS} file")
    if suffix not in FORMATS:
        found = f"'{suffix}' is not a format vaelab writes" if suffix else "it has no suffix"
        raise VaelabError(f"cannot write {path}: {found}; name a {_KINDS} file")
    check_folder_of(path)
    try:  # os.access misleads under root and on some network file systems: try it
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise write_error(path, error) from None
    return path


def save_embedding(
    embedding: Embedding, path: str | Path, *, class_names: Sequence[str] | None = None
) -> Path:
    """Write `embedding` to `path`, in the format its suffix names:

    - `.npy`: the means alone, (N, D) float32;
    - `.npz`: arrays `mean` (N, D), `std` (N, D), `samples` (N, S, D), `labels` (N,) and
      `class_names` (K,), those that exist;
    - `.csv`: a header, then one row per image: `index`, `label` and `class` (with labels and
      class names), `mean_0` .. `mean_{D-1}`, `std_0` .., and `sample_{s}_{d}` for sample s.

    The file is written beside its final place and renamed into it, so a failure leaves
    nothing behind (and an older file of that name untouched).
    """
    path = check_output(path)
    suffix = path.suffix.lower()
    try:
        # A suffix numpy knows, so that it does not append its own to the temporary name.
        with atomic_path(path, suffix=suffix) as tmp:
            if suffix == ".npy":
                np.save(tmp, _numpy(embedding.mean).astype(np.float32))
            elif suffix == ".npz":
                np.savez(tmp, **_arrays(embedding, class_names))
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as handle:
                    _write_csv(handle, embedding, class_names)
    except OSError as error:
        raise write_error(path, error) from None
    left_out = embedding.contents(means=False)
    if suffix == ".npy" and left_out:
        logger.info("%s holds the means alone; .npz or .csv would also keep the %s", path, left_out)
    return path


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _arrays(embedding: Embedding, class_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    arrays = {"mean": _numpy(embedding.mean).astype(np.float32)}
    if embedding.std is not None:
        arrays["std"] = _numpy(embedding.std).astype(np.float32)
    if embedding.samples is not None:
        arrays["samples"] = _numpy(embedding.samples).astype(np.float32)
    if embedding.labels is not None:
        arrays["labels"] = _numpy(embedding.labels).astype(np.int64)
        if class_names is not None:
            arrays["class_names"] = np.array(list(class_names), dtype=str)  # unicode, no pickle
    return arrays


def _write_csv(handle: TextIO, embedding: Embedding, class_names: Sequence[str] | None) -> None:
    """One row per image; floats with 9 significant digits, which read back as the same
    float32."""
    n, d = len(embedding), embedding.dim
    named = embedding.labels is not None and class_names is not None
    header = ["index"]
    header += ["label"] if embedding.labels is not None else []
    header += ["class"] if named else []
    columns = [embedding.mean]
    header += [f"mean_{j}" for j in range(d)]
    if embedding.std is not None:
        columns.append(embedding.std)
        header += [f"std_{j}" for j in range(d)]
    if embedding.samples is not None:
        s = embedding.samples.shape[1]
        columns.append(embedding.samples.reshape(n, s * d))  # sample 0's D values, then 1's
        header += [f"sample_{i}_{j}" for i in range(s) for j in range(d)]
    values = np.concatenate([_numpy(c) for c in columns], axis=1)  # (N, columns)
    labels = None if embedding.labels is None else embedding.labels.tolist()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    for i in range(n):
        row: list[object] = [i]
        if labels is not None:
            row.append(labels[i])
            if named:
                row.append(_class_name(class_names, labels[i]))
        row += [f"{v:.9g}" for v in values[i]]
        writer.writerow(row)


def _class_name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else ""
