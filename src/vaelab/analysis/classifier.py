"""A small image classifier that scores decoded images: trained once per dataset, then cached.

The cache is `$VAELAB_CACHE/classifiers/<key>/` (else `${XDG_CACHE_HOME:-~/.cache}/vaelab/...`):
`classifier.json` (its configuration and test accuracy) and `model.safetensors`. The key hashes
the dataset's name, shape and training split, so changed data trains a new classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vaelab.data import DataSplits, Split, iterate_batches
from vaelab.errors import VaelabError
from vaelab.files import cache_root, make_private_temp_public

log = logging.getLogger(__name__)

VERSION = 1  # bump when the network or its training changes: old cache entries are then unused
CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"
WIDTHS = (16, 32)  # conv channels; small enough to train on MNIST in well under a minute on CPU
FEATURES = 128  # the penultimate layer, used for Frechet distances
STEPS = 1000  # optimiser steps (at least 2 epochs): about 2 epochs of MNIST
BATCH_SIZE = 128


class ClassifierUnavailable(VaelabError):
    """The dataset cannot train a classifier (e.g. it has no labels); the message says why."""


class ClassifierNet(nn.Module):
    """Two 3x3 conv + ReLU layers (stride 2 while H and W are both >= 4), average-pooled to at
    most 7x7, a 128-unit ReLU feature layer and a linear layer giving class logits. Inputs are
    standardised with the training set's per-channel mean and std, kept as buffers."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = shape
        layers: list[nn.Module] = []
        for out in WIDTHS:
            stride = 2 if min(height, width) >= 4 else 1
            layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1), nn.ReLU()]
            height, width = -(-height // stride), -(-width // stride)
            channels = out
        pooled = (min(height, 7), min(width, 7))
        layers += [nn.AdaptiveAvgPool2d(pooled), nn.Flatten()]
        layers += [nn.Linear(channels * pooled[0] * pooled[1], FEATURES), nn.ReLU()]
        self.body = nn.Sequential(*layers)  # (B, C, H, W) -> (B, FEATURES)
        self.head = nn.Linear(FEATURES, num_classes)
        self.register_buffer("mean", torch.zeros(1, shape[0], 1, 1))
        self.register_buffer("std", torch.ones(1, shape[0], 1, 1))

    def features(self, x: Tensor) -> Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class Classifier:
    """A trained `ClassifierNet` with what is known about it."""

    network: ClassifierNet
    class_names: tuple[str, ...]
    test_accuracy: float  # on `accuracy_split`
    accuracy_split: str  # "test", else "val" where the test split has no labels
    path: Path  # its cache folder

    @property
    def device(self) -> torch.device:
        return self.network.mean.device

    def to(self, device: str | torch.device) -> Classifier:
        self.network.to(device)
        return self

    def _batched(self, fn: Any, x: Tensor, batch_size: int) -> Tensor:
        if len(x) == 0:
            raise VaelabError("no images to classify: pass a non-empty (N, C, H, W) batch")
        outputs = []
        with torch.inference_mode():
            for batch in iterate_batches(x, batch_size, shuffle=False):
                outputs.append(fn(batch.to(self.device, torch.float32)).float().cpu())
        return torch.cat(outputs)

    def probabilities(self, x: Tensor, *, batch_size: int = 1024) -> Tensor:
        """Class probabilities for images x (N, C, H, W): (N, K), on the CPU."""
        return self._batched(lambda b: self.network(b).softmax(dim=1), x, batch_size)

    def features(self, x: Tensor, *, batch_size: int = 1024) -> Tensor:
        """Penultimate-layer features for images x (N, C, H, W): (N, 128), on the CPU."""
        return self._batched(self.network.features, x, batch_size)


def dataset_key(data: DataSplits) -> str:
    """A hash of the name, shape, labels and uint8-quantised training images of `data`."""
    x = data.train.x
    low, high = float(x.min()), float(x.max())
    quantised = ((x - low) / max(high - low, 1e-12) * 255).round().to(torch.uint8)
    digest = hashlib.sha256()
    header = [VERSION, data.name, list(data.shape), round(low, 6), round(high, 6)]
    digest.update(json.dumps(header).encode())
    digest.update(quantised.numpy().tobytes())
    digest.update(data.train.y.numpy().tobytes())
    return digest.hexdigest()[:20]


def _labelled(data: DataSplits) -> None:
    if data.train.y is None or len(data.train) == 0:
        raise ClassifierUnavailable(
            f"dataset {data.name} has no class labels, so no classifier can be trained to score "
            "decoded images"
        )
    if bool((data.train.y < 0).any()):
        raise ClassifierUnavailable(
            f"the training split of {data.name} has hidden labels (--labelled): the classifier "
            "that scores decoded images trains on every label; load the data without --labelled"
        )


def _num_classes(data: DataSplits) -> int:
    counts = [int(s.y.max()) + 1 for s in (data.train, data.val, data.test) if _has_labels(s)]
    return max([len(data.class_names or ()), *counts])


def _has_labels(split: Split) -> bool:
    return split.y is not None and len(split) > 0


def train_classifier(
    x: Tensor, y: Tensor, num_classes: int, *, seed: int = 0, device: str | torch.device = "cpu"
) -> ClassifierNet:
    """A `ClassifierNet` trained by Adam on (x (N, C, H, W), y (N,)) for max(STEPS, 2 epochs)
    steps of cross-entropy; deterministic given `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ClassifierNet(tuple(x.shape[1:]), num_classes)
    network.mean.copy_(x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
    network.std.copy_(x.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1))
    network.to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(x) // BATCH_SIZE)
    epochs = max(2, -(-STEPS // batches_per_epoch))
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(BATCH_SIZE):
            logits = network(x[index].to(device))
            loss = nn.functional.cross_entropy(logits, y[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return network.eval()


def _accuracy(classifier: Classifier, split: Split) -> float:
    predicted = classifier.probabilities(split.x).argmax(dim=1)
    return float((predicted == split.y).float().mean())


def classifier_for(data: DataSplits, *, device: str | torch.device = "cpu") -> Classifier:
    """The cached classifier of `data`, trained (and cached) on its first use.

    Raises `ClassifierUnavailable` when the training split has no labels.
    """
    _labelled(data)
    folder = cache_root() / "classifiers" / dataset_key(data)
    if (folder / CONFIG_FILE).is_file():
        try:
            return _load(folder).to(device)
        except VaelabError as error:
            log.warning("%s; training the classifier again", error)
    return _train_and_save(data, folder, device)


def _train_and_save(data: DataSplits, folder: Path, device: str | torch.device) -> Classifier:
    num_classes = _num_classes(data)
    names = data.class_names or tuple(str(k) for k in range(num_classes))
    log.info("training a classifier for %s (once; cached in %s)", data.name, folder)
    started = time.perf_counter()
    network = train_classifier(data.train.x, data.train.y, num_classes, device=device)
    split_name = next((n for n in ("test", "val") if _has_labels(data.split(n))), "train")
    classifier = Classifier(network, names, float("nan"), split_name, folder)
    classifier.test_accuracy = _accuracy(classifier, data.split(split_name))
    values = {
        "version": VERSION,
        "dataset": data.name,
        "shape": list(data.shape),
        "num_classes": num_classes,
        "class_names": list(names),
        "test_accuracy": classifier.test_accuracy,
        "accuracy_split": split_name,
        "train_examples": len(data.train),
        "train_seconds": time.perf_counter() - started,
    }
    _save(network, values, folder)
    log.info("classifier %s accuracy: %.4f", split_name, classifier.test_accuracy)
    return classifier


def _save(network: ClassifierNet, values: dict[str, Any], folder: Path) -> None:
    """Write into a temporary sibling, then rename: a reader never sees half an entry."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        make_private_temp_public(tmp)
        weights = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        make_private_temp_public(tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(values, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)  # a corrupt entry being replaced
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / CONFIG_FILE).is_file():  # else another process cached it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> Classifier:
    try:
        values = json.loads((folder / CONFIG_FILE).read_text())
        network = ClassifierNet(tuple(values["shape"]), values["num_classes"])
        network.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return Classifier(
            network.eval(),
            tuple(values["class_names"]),
            float(values["test_accuracy"]),
            values["accuracy_split"],
            folder,
        )
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as error:
        raise VaelabError(f"cached classifier {folder} is unreadable ({error})") from None
