"""The runs an explorer serves: each loaded once at start-up with its test codes and map plane,
and the conversions between images and the PNG data URLs the browser page shows."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from vaelab.analysis.latents import Plane, decode_codes, encode_dataset, latent_plane, project_2d
from vaelab.analysis.samplers import GaussianMixtureSampler
from vaelab.data import Factors, Split, image_to_tensor
from vaelab.errors import VaelabError
from vaelab.explorer.browser_decoder import BrowserDecoder, browser_decoder, on_server
from vaelab.explorer.samplers import fit_code_mixture
from vaelab.figures import image_grid, to_display
from vaelab.models import Autoencoder
from vaelab.runs import RunSplit, open_run
from vaelab.training import RunConfig

log = logging.getLogger(__name__)

MAP_POINTS = 2000  # at most this many test codes are drawn on the map
MAP_SEED = 0  # which ones: a fixed subsample, the same on every start
MIN_TSNE_POINTS = 5  # fewer codes have no neighbourhoods to keep
# An upload is decoded at most this many pixels (4 MB as RGBA), so one request costs a few MB
# whatever it sends; a JPEG is first reduced while it is decoded (by up to 8 in each side).
MAX_UPLOAD_PIXELS = 1024 * 1024
JPEG_DRAFT_FACTOR = 4  # a JPEG is decoded at no less than 4x the run's image size
# Uploads decoded at once (others wait their turn): with the pixel bound, this bounds the
# memory that a burst of uploads takes, whatever the number of clients.
_DECODING = threading.BoundedSemaphore(2)
UNKNOWN_RANGE = (0.0, 1.0)  # checkpoints of older versions do not record their data's range
PNG_PREFIX = "data:image/png;base64,"
BATCH = 1024  # codes encoded or decoded at a time


class BadInput(ValueError):
    """A request's content is invalid: the API answers 422 with this message."""


@dataclass
class ServedRun:
    """One run, ready to serve: model (eval), config, data range and its test split's codes.

    For data with known generative factors (`--dataset shapes`), `test.factors` holds their
    indices and `factor_info` describes them; both are None otherwise.

    A label-conditional model (`conditional`: a cvae, an m2) encodes and decodes with class
    labels y; its test codes are encoded with each image's own label. A completion model (a
    cvae with --observe) encodes with the image's own observed part and cannot decode a bare
    code.
    """

    name: str
    model: Autoencoder
    config: RunConfig
    data_range: tuple[float, float]  # the training data's [min, max]; maps to [0, 255] in PNGs
    test: Split  # the test split (val or train when empty), as `vaelab.runs` chooses it
    codes: torch.Tensor  # (N, D) posterior means of `test`, on the CPU
    plane: Plane
    map_indices: torch.Tensor  # (M,) indices into `test` drawn on the map, M <= MAP_POINTS
    class_names: tuple[str, ...] | None
    factor_info: Factors | None = None
    browser: BrowserDecoder = field(default_factory=lambda: on_server("not asked for"))
    mixture: GaussianMixtureSampler | None = None  # an autoencoder's sampler (see `samplers`)
    background: tuple[float, ...] = (0.0,)  # per channel in [0, 1]: see `background_of`
    lock: threading.Lock = field(default_factory=threading.Lock)  # one model call at a time
    _tsne: torch.Tensor | None = field(default=None, repr=False)
    _sprite: bytes | None = field(default=None, repr=False)
    _tsne_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sprite_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def latent_dim(self) -> int:
        return self.config.model.latent_dim

    @property
    def projection(self) -> str:
        return "pca" if self.latent_dim > 2 else "identity"

    @property
    def conditional(self) -> bool:
        """Whether the model encodes and decodes with a class label (cvae, m2)."""
        return self.model.needs_labels

    @property
    def classes(self) -> int:
        """K, the number of class labels of a conditional model; 0 for others."""
        return self.config.model.classes if self.conditional else 0

    @property
    def observe(self) -> str | None:
        """A completion model's observed quadrants; None for other models."""
        return self.config.model.observe

    @property
    def classifier(self) -> bool:
        """Whether the model has a classifier q(y|x) (an m2)."""
        return callable(getattr(self.model, "predict_proba", None))

    def label_names(self) -> list[str] | None:
        """The names of a conditional model's K labels: the data's class names, else 0..K-1."""
        if not self.conditional:
            return None
        names = self.class_names
        if names is not None and len(names) == self.classes:
            return list(names)
        return [str(k) for k in range(self.classes)]

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, D) on the CPU, with labels y (B,) for a conditional model -> images
        (B, C, H, W) on the CPU, in data space."""
        with self.lock:
            return decode_codes(self.model, z) if y is None else _decode(self.model, z, y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) in data space, with labels y (B,) for a conditional model (an m2's
        classifier infers those not given) -> codes (B, D), the posterior means, on the CPU."""
        with self.lock:
            return encode_dataset(self.model, x) if y is None else _encode(self.model, x, y)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x) of the model's classifier (an m2's): x (B, C, H, W) -> (B, K) on the CPU."""
        with self.lock, torch.inference_mode():
            return self.model.predict_proba(x.to(self.model.device, self.model.dtype)).cpu()

    def tsne(self) -> torch.Tensor:
        """(M, 2) the t-SNE map of the map's codes (`vaelab plot --projection tsne`'s, seed
        0), computed on first use: it keeps neighbourhoods, where the plane keeps the two
        widest directions, but has no inverse. Raises ValueError for fewer than
        MIN_TSNE_POINTS codes."""
        with self._tsne_lock:
            if self._tsne is None:
                codes = self.codes[self.map_indices]
                if len(codes) < MIN_TSNE_POINTS:
                    raise ValueError(
                        f"a t-SNE map needs at least {MIN_TSNE_POINTS} codes, this run has "
                        f"{len(codes)}"
                    )
                self._tsne = project_2d(codes, "tsne", seed=0)
            return self._tsne

    @property
    def sprite_columns(self) -> int:
        """The map's test images to a row in `map_sprite`."""
        return max(1, math.ceil(math.sqrt(len(self.map_indices))))

    def map_sprite(self) -> bytes:
        """One PNG of the test images of the map's points, in the map's order, `sprite_columns`
        to a row at the data's own size with no gaps: the page shows the nearest one on hover
        without a request. Made on first use."""
        with self._sprite_lock:
            if self._sprite is None:
                grid = image_grid(
                    self.test.x[self.map_indices].float(),
                    columns=self.sprite_columns,
                    padding=0,
                    value_range=self.data_range,
                )
                buffer = io.BytesIO()
                grey = grid.ndim == 2 or grid.shape[2] == 1
                Image.fromarray(grid.reshape(grid.shape[:2]) if grey else grid).save(buffer, "PNG")
                self._sprite = buffer.getvalue()
            return self._sprite

    def factor_labels(self, f: int) -> list[str]:
        """Legend text for each index of factor `f`: the class names where the factor is the
        class label (shapes' `shape`, whose values are only the class indices), else its
        physical values to 3 significant digits."""
        if self.factor_info is None or self.test.factors is None:
            raise ValueError(f"run {self.name} has no known factors")
        values, names, y = self.factor_info.values[f], self.class_names, self.test.y
        is_label = y is not None and torch.equal(y, self.test.factors[:, f])
        if names is not None and is_label and len(names) == len(values):
            return list(names)
        return [f"{v:.3g}" for v in values]


def run_names(paths: list[Path]) -> list[str]:
    """Each run's folder name; repeated names get suffixes -2, -3, ... in order."""
    names: list[str] = []
    for path in paths:
        base = Path(path).resolve().name or "run"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def load_served_run(
    name: str,
    path: Path,
    *,
    device: torch.device | str = "cpu",
    browser_decoding: bool = True,
    checkpoint: str | None = None,
) -> ServedRun:
    """Load the run folder `path` (`checkpoint`, else as `open_run` picks it) and serve its
    test split (see `serve_split`)."""
    try:
        chosen = open_run(path, device=device, checkpoint=checkpoint).choose_split()
    except VaelabError as error:
        raise VaelabError(f"run {path}: {error}") from None
    return serve_split(name, chosen, browser_decoding=browser_decoding)


def serve_split(name: str, chosen: RunSplit, *, browser_decoding: bool = True) -> ServedRun:
    """An opened run and one split of its data, ready to serve: the split's codes, its map
    plane and sampler; with `browser_decoding`, its decoder for the page (see
    `browser_decoder`)."""
    trained = chosen.run
    described = chosen.factor_info is not None  # indices without names are not shown
    test = Split(chosen.x, chosen.y, chosen.factors if described else None)
    model = trained.model
    try:
        if model.needs_labels and test.y is not None:
            codes = _encode(model, test.x, test.y)  # (N, D), each with its own label (m2: or -1)
        else:  # an m2 infers the labels; a completion model reads each image's observed part
            codes = encode_dataset(model, test.x)  # (N, D)
    except VaelabError as error:
        raise VaelabError(f"run {trained.run_dir}: {error}") from None
    generator = torch.Generator().manual_seed(MAP_SEED)
    map_indices = torch.randperm(len(test), generator=generator)[:MAP_POINTS].sort().values
    if browser_decoding:
        browser = browser_decoder(trained, codes)
    else:
        browser = on_server("vaelab serve --server-decoding")
    return ServedRun(
        name=name,
        model=trained.model,
        config=trained.config,
        data_range=trained.value_range or UNKNOWN_RANGE,
        test=test,
        codes=codes,
        plane=latent_plane(codes),  # the plane of `vaelab plot`'s figures, for this split
        map_indices=map_indices,
        class_names=chosen.class_names,
        factor_info=chosen.factor_info if test.factors is not None else None,
        browser=browser,
        mixture=None if model.has_prior or model.needs_labels else fit_code_mixture(codes),
        background=background_of(test.x, trained.value_range or UNKNOWN_RANGE),
    )


BACKGROUND_IMAGES = 1000  # the test images whose borders say what the background is


def background_of(x: torch.Tensor, data_range: tuple[float, float]) -> tuple[float, ...]:
    """The data's background, per channel in [0, 1] (data_range mapped as the PNGs map it):
    the median of the outermost pixels of the first BACKGROUND_IMAGES images x (N, C, H, W).
    MNIST's is black (0.0); the page composites transparent uploads onto it and sets their
    polarity by it."""
    if len(x) == 0:
        return (0.0,) * x.shape[1]
    shown = to_display(x[:BACKGROUND_IMAGES].float(), value_range=data_range)
    border = torch.cat(
        [shown[:, :, 0], shown[:, :, -1], shown[:, :, :, 0], shown[:, :, :, -1]], dim=2
    )  # (N, C, 2W + 2H)
    return tuple(border.transpose(0, 1).reshape(x.shape[1], -1).median(dim=1).values.tolist())


def _encode(model: Autoencoder, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The posterior means of x (N, C, H, W) with labels y (N,), batched -> (N, D) on the CPU."""
    with torch.inference_mode():
        codes = [
            model.encode(xb.to(model.device, model.dtype), yb.to(model.device)).mean.float().cpu()
            for xb, yb in zip(x.split(BATCH), y.split(BATCH), strict=True)
        ]
    return torch.cat(codes) if codes else torch.zeros(0, model.config.latent_dim)


def _decode(model: Autoencoder, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The images of codes z (N, D) with labels y (N,), batched -> (N, C, H, W) float32 on the
    CPU."""
    with torch.inference_mode():
        images = [
            model.decode(zb.to(model.device, model.dtype), yb.to(model.device)).float().cpu()
            for zb, yb in zip(z.split(BATCH), y.split(BATCH), strict=True)
        ]
    return torch.cat(images) if images else torch.zeros(0, *model.config.data_shape)


# --- images <-> PNG data URLs ----------------------------------------------------------------


def to_data_urls(x: torch.Tensor, data_range: tuple[float, float]) -> list[str]:
    """Images (B, C, H, W) in data space -> PNG data URLs, data_range mapped to [0, 255]."""
    scaled = to_display(x, value_range=data_range)
    pixels = (scaled * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    urls = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, "PNG")
        urls.append(PNG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls


def read_data_url(text: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """A PNG/JPEG/GIF/BMP/WebP as a data URL or bare base64 -> (C, H, W) float32 in [0, 1].

    Resized to `shape` = (C, H, W); transparency is composited onto white, as a browser shows
    it (the same conversion as `vaelab.data.load_image_file`). A JPEG is reduced while it is
    decoded (`Image.draft`); an image of more than MAX_UPLOAD_PIXELS pixels after that is
    refused before it is decoded. Raises BadInput.
    """
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise BadInput("image must be a base64 data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image is not valid base64") from None
    if not data:
        raise BadInput("image is empty")
    try:
        with (
            _DECODING,
            Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "GIF", "BMP", "WEBP"]) as image,
        ):
            if image.format == "JPEG":  # DCT scaling: decoded at 1/2, 1/4 or 1/8 of its size
                image.draft(None, (JPEG_DRAFT_FACTOR * shape[2], JPEG_DRAFT_FACTOR * shape[1]))
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise BadInput(
                    f"image is {width}x{height} ({width * height:,} pixels); the largest "
                    f"allowed has {MAX_UPLOAD_PIXELS:,} pixels (1024x1024): send a smaller one"
                )
            image.load()
            x = image_to_tensor(image, shape)
    except BadInput:
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises many types on malformed bytes,
        # and any failure to decode an uploaded image is the client's bad input, not ours.
        reason = _reason(error)
        raise BadInput(
            f"could not read the image as PNG, JPEG, GIF, BMP or WebP: {reason}"
        ) from None
    return x


# PIL names the file it read in its messages, e.g. "cannot identify image file
# <_io.BytesIO object at 0x7f...>": for an upload that is an address in this process, which says
# nothing to the client (and should not be shown), so such object reprs are taken out.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(error: Exception) -> str:
    """What went wrong reading an upload, in one line of at most 200 characters."""
    text = " ".join(_OBJECT_REPR.sub("", str(error)).split()).rstrip(" :")
    return text[:200] or type(error).__name__
