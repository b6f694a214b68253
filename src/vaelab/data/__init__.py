"""Datasets as in-memory tensors: named sources, image folders and arrays, split by seed."""

from vaelab.data.batches import batch_indices, iterate_batches
from vaelab.data.config import DataConfig
from vaelab.data.factors import Factors
from vaelab.data.images import image_to_tensor, load_image_file
from vaelab.data.loading import DATASETS, load_data, registered_name
from vaelab.data.splits import DataSplits, Split
from vaelab.data.tensors import looks_like_0_255
from vaelab.data.transforms import draw_binary

__all__ = [
    "DATASETS",
    "DataConfig",
    "DataSplits",
    "Factors",
    "Split",
    "batch_indices",
    "draw_binary",
    "image_to_tensor",
    "iterate_batches",
    "load_data",
    "load_image_file",
    "looks_like_0_255",
    "registered_name",
]
