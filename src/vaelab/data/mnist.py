"""MNIST and Fashion-MNIST: find the IDX files locally or download them, then load them."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.data.config import DataConfig
from vaelab.data.download import DownloadFailed, Resource, download
from vaelab.data.idx import parse_idx, read_idx, read_idx_bytes
from vaelab.data.splits import SourceData, Split
from vaelab.errors import VaelabError
from vaelab.files import cache_root

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
    """An IDX dataset: folder name, display title, class names and its four gzipped resources.

    `train_images_md5` is the md5 of the uncompressed train-images file. MNIST and Fashion-MNIST
    use the same file names, so it is how one is recognised where the other was asked for.
    `system_dirs` are folders an OS package installs the files into, searched after the user's
    folders and the cache, before any download; `system_package` names that package for errors.
    The `resources`' md5s are of the published .gz files and are checked only on download: a
    package may recompress the files (Debian's do), which changes those bytes but not the
    uncompressed contents that `train_images_md5` checks.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    resources: tuple[Resource, Resource, Resource, Resource]  # in IDX_STEMS order
    train_images_md5: str
    system_dirs: tuple[Path, ...] = ()
    system_package: str | None = None  # e.g. a Debian package installing into system_dirs


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
        train_images_md5="6bbc9ace898e44ae57da46a324031adb",
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
        ),
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
        train_images_md5="f4a8712d7a061bf5bd6d2ca38dc4d50a",
        # Debian's (and Ubuntu's) `dataset-fashion-mnist` package installs the four .gz files here.
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        system_package="dataset-fashion-mnist",
    ),
}


def load_idx_dataset(name: str, config: DataConfig, *, progress: bool = True) -> SourceData:
    """The official train pool and test set of the IDX dataset registered as `name`."""
    dataset = IDX_DATASETS[name]
    paths = _locate(dataset, config, progress)
    raw = read_idx_bytes(paths[0])
    # One md5 of the train images, which are read anyway: cheap next to parsing them.
    _check_identity(dataset, hashlib.md5(raw, usedforsecurity=False).hexdigest(), paths[0].parent)
    train_images = parse_idx(raw, str(paths[0]))
    del raw
    train = _read_pair(train_images, paths[0], paths[1], len(dataset.class_names))
    test = _read_pair(read_idx(paths[2]), paths[2], paths[3], len(dataset.class_names))
    log.info(
        "loaded %s from %s: %d train, %d test",
        dataset.title,
        paths[0].parent,
        len(train),
        len(test),
    )
    return SourceData(pool=train, test=test, class_names=dataset.class_names)


def _check_identity(dataset: IdxDataset, train_images_md5: str, folder: Path) -> None:
    """Refuse another registered dataset's files, e.g. MNIST's where Fashion-MNIST was asked for."""
    others = [d for d in IDX_DATASETS.values() if d.train_images_md5 == train_images_md5]
    if not others or others[0].name == dataset.name:
        return
    if folder == cache_root() / dataset.name:
        fix = f"delete them so that {dataset.title} is downloaded again"
    elif folder.name == dataset.name:
        fix = f"replace them with {dataset.title}'s files"
    else:
        fix = f"put {dataset.title}'s files in {folder / dataset.name}"
    raise VaelabError(
        f"the IDX files in {folder} are {others[0].title}, not {dataset.title}; {fix}"
    )


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _data_dir(config: DataConfig) -> Path | None:
    """`config.data_dir`, else $VAELAB_DATA, else None."""
    base = config.data_dir or os.environ.get("VAELAB_DATA")
    return Path(base).expanduser() if base else None


def _locate(dataset: IdxDataset, config: DataConfig, progress: bool) -> list[Path]:
    """Paths of the four files: the first folder holding all of them, else the cache + downloads.

    Searched in order: <data dir>/<name>, <data dir> (data_dir, else $VAELAB_DATA), the cache,
    the dataset's system folders (an OS package's, e.g. /usr/share/datasets/fashion-mnist).
    """
    data_dir = _data_dir(config)
    cache = cache_root() / dataset.name
    folders = [data_dir / dataset.name, data_dir] if data_dir else []
    for folder in [*folders, cache, *dataset.system_dirs]:
        found = [_find(folder, stem) for stem in IDX_STEMS]
        if all(found):
            return found
    files = f"the four IDX files ({', '.join(IDX_STEMS)}, optionally .gz)"
    looked = _and([*map(str, folders), f"the cache {cache}", *map(str, dataset.system_dirs)])
    if data_dir:
        hint = f"put {files} in {folders[0]}"
    else:
        looked += ", as neither data_dir nor VAELAB_DATA is set"
        hint = f"put {files} in {cache}, or in DIR/{dataset.name} and set VAELAB_DATA=DIR"
    if dataset.system_package:
        hint += f"; or install them with `sudo apt install {dataset.system_package}`"
    if not config.download:
        raise VaelabError(f"{dataset.title} files not found (looked in {looked}); {hint}")
    missing = [
        r for r, stem in zip(dataset.resources, IDX_STEMS, strict=True) if not _find(cache, stem)
    ]
    log.info("downloading %s into %s", dataset.title, cache)
    for resource in missing:
        try:
            download(resource, cache, progress=progress)
        except DownloadFailed as e:
            reason = " ".join(e.reason.split())  # keep the message on one line
            raise VaelabError(
                f"could not download {dataset.title} file {resource.filename} ({reason}) "
                f"after looking in {looked}; with no network, {hint}"
            ) from None
        except OSError as e:
            reason = " ".join(str(e).split())
            raise VaelabError(
                f"could not write to the cache {cache} ({reason}); set VAELAB_CACHE to a writable "
                "folder"
            ) from None
    return [_find(cache, stem) for stem in IDX_STEMS]


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _read_pair(images: np.ndarray, images_path: Path, labels_path: Path, num_classes: int) -> Split:
    """(N, 1, H, W) images in [0, 1] with their labels; `images` were read from `images_path`."""
    labels = read_idx(labels_path)
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
