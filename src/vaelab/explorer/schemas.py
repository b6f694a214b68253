"""Request and response bodies of the explorer's JSON API (pydantic; they make /openapi.json).

Bounds that depend on the run (the latent size D, the number of test images, max_batch, the
number of classes K) are checked by the endpoints; everything else is checked here, so a bad body
is a 4xx, never a 500.

Label-conditional runs (a cvae without --observe, an m2; `conditional` in /api/runs) decode only
with a class label: `label` is then required by decode, sample and interpolate, a whole number in
[0, K) (else a 422 that says so). An unconditional run takes no label: a request that gives one is
refused with a 422 rather than silently ignored. A completion model (a cvae trained with
--observe; `completion` in /api/runs) decodes only with the observed part of an image, so its
decode, encode, sample and interpolate answer 400 and point to `vaelab complete`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ABS = 1e3  # larger latent values or plane coordinates are refused: they decode to noise
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed accepts
MAX_TEMPERATURE = 2.0

Value = Annotated[float, Field(ge=-MAX_ABS, le=MAX_ABS, allow_inf_nan=False)]
Vector = list[Value]
Point = Annotated[list[Value], Field(min_length=2, max_length=2)]
Index = Annotated[int, Field(ge=0)]
Steps = Annotated[int, Field(ge=2, le=64)]
# strict: a JSON whole number only (not 3.0, "3" or true); the run checks it is below its K
Label = Annotated[int, Field(ge=0, strict=True)]
LABEL_HELP = (
    "the class label to decode with, 0 to K - 1: required for a label-conditional run (a cvae, "
    "an m2), refused for an unconditional one"
)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """Every refusal of the API (4xx): what was wrong, in one line."""

    detail: str


class DecodeRequest(Body):
    """Either latent vectors `z` (each of length D) or `points` on the map's plane."""

    z: list[Vector] | None = None
    points: list[Point] | None = None
    label: Label | None = Field(default=None, description=LABEL_HELP)

    @model_validator(mode="after")
    def _one_of(self) -> DecodeRequest:
        if (self.z is None) == (self.points is None):
            raise ValueError("give exactly one of 'z' (latent vectors) or 'points' (map points)")
        return self


class EncodeRequest(Body):
    image: str = Field(description="a PNG/JPEG data URL (data:image/png;base64,...) or base64")
    label: Label | None = Field(
        default=None,
        description="the class label to encode with, 0 to K - 1: required for a cvae; optional "
        "for an m2, whose classifier infers it when left out; refused for an unconditional run",
    )


class SampleRequest(Body):
    n: Annotated[int, Field(ge=1, le=64)] = 16
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    temperature: Annotated[float, Field(gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False)] = Field(
        default=1.0,
        description="scales the spread of the draws around the prior's centre (see `sampler` "
        "in /api/runs); other than 1 only where `temperature` is true there",
    )
    label: Label | None = Field(
        default=None, description=LABEL_HELP + ": every sample is of this class"
    )


class InterpolateRequest(Body):
    """Between two test images (`from_index`, `to_index`) or two codes (`z_a`, `z_b`)."""

    from_index: Index | None = None
    to_index: Index | None = None
    z_a: Vector | None = None
    z_b: Vector | None = None
    steps: Steps = 10
    spherical: bool = False
    label: Label | None = Field(
        default=None, description=LABEL_HELP + ": the whole path is decoded with it"
    )

    @model_validator(mode="after")
    def _one_of(self) -> InterpolateRequest:
        by_index = self.from_index is not None and self.to_index is not None
        by_code = self.z_a is not None and self.z_b is not None
        given = [
            k for k in ("from_index", "to_index", "z_a", "z_b") if getattr(self, k) is not None
        ]
        if not (by_index or by_code) or len(given) != 2:
            raise ValueError("give either 'from_index' and 'to_index', or 'z_a' and 'z_b'")
        return self


class FactorInfo(BaseModel):
    """One known generative factor of a run's data (see `vaelab.data.Factors`)."""

    name: str
    categorical: bool = Field(
        description="true for an unordered factor (a shape): its values only name categories"
    )
    values: list[float] = Field(
        description="the physical value of each index (radians, a position in [0, 1], ...)"
    )
    labels: list[str] = Field(
        description="legend text of each index: the class names where the factor is the class "
        "label, else its values to 3 significant digits"
    )


class MixtureInfo(BaseModel):
    """A Gaussian mixture over codes: K weights, K means of D values and K lower-triangular
    Cholesky factors (D x D) of the covariances."""

    weights: list[float]
    means: list[list[float]]
    cholesky: list[list[list[float]]]


class RunInfo(BaseModel):
    name: str
    model: str
    latent_dim: int
    channels: int
    height: int
    width: int
    class_names: list[str] | None
    has_prior: bool
    factors: list[FactorInfo] | None = Field(
        description="the data's known generative factors, in the order of the map's and test "
        "images' factor indices; null for data without them"
    )
    conditional: bool = Field(
        description="whether the run decodes with a class label (a cvae without --observe, an "
        "m2): decode, sample and interpolate then need `label`"
    )
    labels: list[str] | None = Field(
        description="the names of the K class labels a conditional run takes, label k's at "
        "index k (the data's class names, else the numbers); null for other runs"
    )
    classifier: bool = Field(
        description="whether the run has a classifier q(y|x) (an m2): encode then returns its "
        "prediction"
    )
    completion: bool = Field(
        description="whether the run is a completion model (a cvae trained with --observe): it "
        "decodes only with the observed part of an image, so the explorer's decoder is not "
        "available for it; use `vaelab complete`"
    )
    observe: str | None = Field(
        description="a completion model's observed quadrants (e.g. 'top-left,bottom-left'); "
        "null for other runs"
    )
    browser_decoder: bool = Field(
        description="whether the page decodes codes itself, with the ONNX decoder at "
        "/api/runs/{name}/decoder.onnx and onnxruntime-web (`runtime`)"
    )
    decoding: str = Field(description="where the run's codes are decoded, and why, in words")
    normal_samples: bool = Field(
        description="whether the run's samples decode codes drawn from N(0, I) (its prior), "
        "which the page can draw itself"
    )
    sampler: Literal["normal", "mixture", "prior"] = Field(
        description="where samples come from: N(0, I) (`normal`), a Gaussian mixture fitted to "
        "an autoencoder's test codes (`mixture`, given in `mixture`), or the run's own prior "
        "(`prior`: learned, conditional or a VQ-VAE's PixelCNN)"
    )
    temperature: bool = Field(
        description="whether /sample takes a temperature other than 1 (`normal` and `mixture`)"
    )
    mixture: MixtureInfo | None = Field(
        description="an autoencoder's sampler, which the page can draw from itself; null for "
        "other runs"
    )
    background: list[float] = Field(
        description="the data's background per channel in [0, 1] (the median of the test "
        "images' outermost pixels): uploads are composited onto it and take its polarity"
    )
    data_range: list[float] = Field(
        description="the training data's [min, max]: the decoder's output maps it to black "
        "and white"
    )


class RunList(BaseModel):
    runs: list[RunInfo]
    runtime: str | None = Field(
        description="the folder onnxruntime-web's files are served from; null when it is "
        "not installed"
    )


class Bounds(BaseModel):
    xmin: float
    xmax: float
    ymin: float
    ymax: float


class PlaneInfo(BaseModel):
    center: list[float]
    axes: list[list[float]]


class MapResponse(BaseModel):
    points: list[list[float]]
    labels: list[int] | None
    factors: list[list[int]] | None = Field(
        description="(M, F) the factor indices of each point, one column per factor of the "
        "run's `factors`; null for data without known factors"
    )
    indices: list[int]
    bounds: Bounds
    plane: PlaneInfo
    projection: str
    image_columns: int = Field(
        description="the test images of the points are one PNG at /map_images, in the points' "
        "order, this many to a row at the data's size"
    )
    ranges: list[list[float]] = Field(
        description="(D, 2) each latent dimension's slider range: the prior's 0.1% and 99.9% "
        "quantiles (+-3.09) for an N(0, I) prior, widened to the test codes where they reach "
        "further; the test codes' range, with a margin of a tenth, for other models"
    )


class EmbeddingResponse(BaseModel):
    """A second map of the codes of `MapResponse.indices`, in the same order."""

    method: str = Field(description="how it was made: 'tsne'")
    points: list[list[float]]
    codes: list[list[float]] = Field(
        description="(M, D) the codes the points stand for: the page decodes the nearest one"
    )
    bounds: Bounds


class ImagesResponse(BaseModel):
    images: list[str]
    z: list[list[float]]


class InterpolateResponse(ImagesResponse):
    points: list[list[float]]


class Prediction(BaseModel):
    """What a run's classifier q(y|x) (an m2's) makes of an image."""

    label: int = Field(description="the most probable class")
    probability: float = Field(description="its probability q(y = label | x)")
    probabilities: list[float] = Field(description="q(y|x) of every class, label k at k")


class EncodeResponse(BaseModel):
    z: list[float]
    point: list[float]
    reconstruction: str = Field(
        description="the code decoded (with `label`, for a conditional run)"
    )
    label: int | None = Field(
        default=None,
        description="the class label the image was encoded with: the one given, or an m2's "
        "inferred one; null for an unconditional run",
    )
    analogies: list[str] | None = Field(
        default=None,
        description="for a conditional run, the code decoded with every class label: image k "
        "is decode(z, k), K images (the image's style in every class); null otherwise",
    )
    prediction: Prediction | None = Field(
        default=None, description="the classifier's view of the image (an m2's); null without"
    )


class ExampleImageResponse(BaseModel):
    image: str
    label: int | None
    factors: list[int] | None = Field(
        description="the image's factor indices, as in the run's `factors`; null without them"
    )
    z: list[float]
    point: list[float]
