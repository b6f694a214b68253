"""MNIST and Fashion-MNIST: find the IDX files locally or download them, then load them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.data.config import DataConfig
from vaelab.data.download import DownloadFailed, Resource, download
from vaelab.data.idx import read_idx
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError

log = logging.getLogger(__name__)

# Stems of the four files, in the order (train images, train labels, test images, test labels).
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset: folder name, display title, class names and its four gzipped resources."""

    name: str
    title: str
    class_names: tuple[str, ...]
    resources: tuple[Resource, Resource, Resource, Resource]  # in IDX_STEMS order


def _resources(mirrors: tuple[str, ...], md5s: tuple[str, str, str, str]) -> tuple:
    return tuple(
        Resource(f"{stem}.gz", md5, mirrors) for stem, md5 in zip(IDX_STEMS, md5s, strict=True)
    )


IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        name="mnist",
        title="MNIST",
        class_names=tuple(str(d) for d in range(10)),
        resources=_resources(
            (
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
    ),
    "fashion-mnist": IdxDataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
        resources=_resources(
            (
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ),
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
    ),
}


def cache_root() -> Path:
    """$VAELAB_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/vaelab."""
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "vaelab"


def load_idx_dataset(name: str, config: DataConfig, *, progress: bool = True) -> SourceData:
    """The official train pool and test set of the IDX dataset registered as `name`."""
    dataset = IDX_DATASETS[name]
    paths = _locate(dataset, config, progress)
    train = _read_pair(paths[0], paths[1], len(dataset.class_names))
    test = _read_pair(paths[2], paths[3], len(dataset.class_names))
    log.info("loaded %s from %s: %d train, %d test", dataset.title, paths[0].parent,
             len(train), len(test))  # fmt: skip
    return SourceData(pool=train, test=test, class_names=dataset.class_names)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(dataset: IdxDataset, config: DataConfig, progress: bool) -> list[Path]:
    """Paths of the four files: the first folder holding all of them, else the cache + downloads."""
    base = config.data_dir or os.environ.get("VAELAB_DATA")
    cache = cache_root() / dataset.name
    folders = [Path(base).expanduser() / dataset.name, Path(base).expanduser()] if base else []
    for folder in [*folders, cache]:
        found = [_find(folder, stem) for stem in IDX_STEMS]
        if all(found):
            return found
    missing = [
        r
        for r, stem in zip(dataset.resources, IDX_STEMS, strict=True)
        if _find(cache, stem) is None
    ]
    hint = (
        f"put the four IDX files ({', '.join(IDX_STEMS)}, optionally .gz) in {cache} "
        "or point --data-dir / VAELAB_DATA at them"
    )
    if not config.download:
        looked = ", ".join(str(f) for f in [*folders, cache])
        raise VaelabError(f"{dataset.title} files not found (looked in {looked}); {hint}")
    for resource in missing:
        try:
            download(resource, cache, progress=progress)
        except DownloadFailed as e:
            raise VaelabError(
                f"could not download {dataset.title} file {resource.filename} ({e.reason}); "
                f"with no network, {hint}"
            ) from None
        except OSError as e:
            raise VaelabError(f"could not write to the cache {cache}: {e}") from None
    return [_find(cache, stem) for stem in IDX_STEMS]


def _read_pair(images_path: Path, labels_path: Path, num_classes: int) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise VaelabError(f"{images_path} must hold uint8 images (N, H, W); replace the file")
    if labels.ndim != 1 or len(labels) != len(images) or labels.dtype != np.uint8:
        raise VaelabError(
            f"{labels_path} must hold {len(images)} uint8 labels to match {images_path.name}; "
            "replace the file"
        )
    if len(labels) and labels.max() >= num_classes:
        raise VaelabError(f"{labels_path} has labels >= {num_classes}; replace the file")
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255)  # (N, 1, H, W) in [0, 1]
    return Split(x=x, y=torch.from_numpy(labels).long())
