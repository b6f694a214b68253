"""How a run's images were brought to the numbers its encoder reads, in words: what a user of
the ONNX files outside vaelab must do to their own images to get the same codes."""

from __future__ import annotations

from pathlib import Path

from vaelab.data import DataConfig, registered_name

# The registered datasets' pixel values, as their loaders scale them.
REGISTERED = {
    "mnist": "MNIST's 8-bit pixels divided by 255",
    "fashion-mnist": "Fashion-MNIST's 8-bit pixels divided by 255",
    "digits": "scikit-learn's 8x8 digits, whose values 0..16 are divided by 16",
    "shapes": "vaelab's rendered shapes, binary pixels 0 or 1",
}
RENDERED = {"shapes"}  # drawn at the requested size, not resized


def describe_preprocessing(data: DataConfig, data_shape: tuple[int, int, int]) -> str:
    """The conversion from stored images to the encoder's input x, as the run's loader did it."""
    channels, height, width = data_shape
    name = registered_name(data.dataset)
    if name is not None:
        steps = [REGISTERED[name]]
    elif Path(data.dataset).suffix.lower() in (".npy", ".npz"):
        steps = ["array values as stored, 8-bit ones divided by 255 and 16-bit ones by 65535"]
    else:
        steps = [
            "image files read with Pillow: transparency composited onto white, converted to "
            + ("grey (Pillow's 'L')" if channels == 1 else "RGB")
            + (f", resized to {height}x{width} with Lanczos" if data.image_size else "")
            + ", then 8-bit values divided by 255 (16-bit by 65535)"
        ]
    if data.image_size and name is not None and name not in RENDERED:
        steps.append(f"resized to {height}x{width} (bilinear, antialiased)")
    if data.channels is not None and name is not None:
        steps.append("RGB turned grey by the channel mean" if channels == 1 else "grey repeated")
    if data.binarize:
        steps.append(
            "training saw a fresh Bernoulli draw of each image (x = 1 with probability x); "
            "likelihoods are scored on binary images"
        )
    return "; ".join(steps) + f"; layout (batch, {channels}, {height}, {width}), float32"
