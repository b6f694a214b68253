"""`vaelab predict`: the classes an m2 run's classifier q(y|x) gives images, most probable
first, with their probabilities."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.labels import class_probabilities, has_classifier
from vaelab.cli.arguments import (
    MODEL_DEVICE,
    RUN_DATA_DIR,
    RUN_DATASET,
    RUN_PATH,
    add_quiet,
    add_shared_arguments,
    parse_positive,
)
from vaelab.cli.figures import split_index
from vaelab.data import load_image_file
from vaelab.errors import VaelabError
from vaelab.runs import TrainedRun, check_run, open_run

logger = logging.getLogger(__name__)

DEFAULT_TOP = 3


@dataclass(frozen=True)
class Prediction:
    """One image's classes, most probable first."""

    image: str  # the file, or "test #12"
    label: int | None  # its true class, for an image of the run's data
    classes: list[tuple[int, float]]  # (class, probability), the `top` most probable

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "image": self.image,
            "label": self.label,
            "classes": [{"class": c, "name": names[c], "probability": p} for c, p in self.classes],
        }


def predict_run(
    run: Path,
    images: Sequence[str | Path] = (),
    *,
    indices: Sequence[int] = (),
    split: str | None = None,
    top: int = DEFAULT_TOP,
    checkpoint: str | None = None,
    device: str = "auto",
    dataset: str | None = None,
    data_dir: str | None = None,
) -> tuple[list[Prediction], tuple[str, ...]]:
    """The `top` most probable classes of image files (resized and converted to the run's
    image shape) and of the images at `indices` of a split of the run's data, by an m2 run's
    classifier; with the class names (of the run's data where it can be loaded, else the
    class numbers)."""
    check_run(run)
    if top < 1:
        raise VaelabError(f"--top must be at least 1, got {top}")
    if not images and not indices:
        raise VaelabError("pass image files (PNG, JPEG, ...) or --index N of the run's data")
    trained = open_run(run, checkpoint=checkpoint, device=device)
    model = trained.model
    if not has_classifier(model):
        raise VaelabError(
            f"{run} is a {model.config.model} run, which has no classifier q(y|x): vaelab "
            "predict needs an m2 run (vaelab train --model m2)"
        )
    shape = tuple(model.config.data_shape)
    x = [load_image_file(path, shape) for path in images]
    names = [str(path) for path in images]
    labels: list[int | None] = [None] * len(images)
    class_names = None
    if indices:
        chosen = trained.choose_split(split, dataset=dataset, data_dir=data_dir)
        for value in indices:
            index = split_index(value, chosen)
            x.append(chosen.x[index])
            names.append(f"{chosen.split} #{index}")
            known = chosen.y is not None and int(chosen.y[index]) >= 0  # -1: a hidden label
            labels.append(int(chosen.y[index]) if known else None)
        class_names = chosen.class_names
    probs = class_probabilities(model, torch.stack(x))  # (N, K)
    values, classes = probs.topk(min(top, probs.shape[1]), dim=1)
    predictions = [
        Prediction(name, label, list(zip(c.tolist(), v.tolist(), strict=True)))
        for name, label, c, v in zip(names, labels, classes, values, strict=True)
    ]
    if class_names is None:
        class_names = _class_names(trained, dataset, data_dir)
    if class_names is None or len(class_names) < model.classes:
        class_names = tuple(str(c) for c in range(model.classes))
    return predictions, class_names


def _class_names(
    trained: TrainedRun, dataset: str | None, data_dir: str | None
) -> tuple[str, ...] | None:
    """The class names of the run's data, or None where it cannot be loaded (or has none)."""
    try:
        return trained.load_data(dataset, data_dir).class_names
    except (VaelabError, OSError) as error:
        logger.info("classes shown as numbers: the run's data could not be loaded (%s)", error)
        return None


def format_prediction(prediction: Prediction, names: Sequence[str]) -> str:
    """`digit.png: 3 (0.9120), 8 (0.0510), 5 (0.0200)`."""
    label = "" if prediction.label is None else f" (label {names[prediction.label]})"
    shown = ", ".join(f"{names[c]} ({p:.4f})" for c, p in prediction.classes)
    return f"{prediction.image}{label}: {shown}"


def add_parsers(subparsers: Any) -> None:
    """The `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="the classes an m2 run's classifier gives images, with probabilities",
        description="Classify images with the classifier q(y|x) of an m2 run (vaelab train "
        "--model m2): for each image its most probable classes, with their probabilities. "
        "IMAGES are image files (PNG, JPEG, ...), resized and converted to the run's image "
        "shape; --index N picks images of the run's data instead (or as well).",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    parser.add_argument("images", metavar="IMAGES", nargs="*", help="image files to classify")
    parser.add_argument(
        "--index",
        type=int,
        nargs="+",
        metavar="N",
        help="images of the split to classify, by index (negative counts from the end)",
    )
    parser.add_argument(
        "--top",
        type=parse_positive,
        default=DEFAULT_TOP,
        metavar="K",
        help=f"how many of the most probable classes to show (default: {DEFAULT_TOP})",
    )
    add_shared_arguments(
        parser,
        checkpoint=True,
        device=MODEL_DEVICE,
        split=True,
        dataset=RUN_DATASET,
        data_dir=RUN_DATA_DIR,
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    add_quiet(parser)


def _predict(args: argparse.Namespace) -> Iterator[str]:
    predictions, names = predict_run(
        Path(args.run),
        args.images,
        indices=args.index or (),
        split=args.split,
        top=args.top,
        checkpoint=args.checkpoint,
        device=args.device,
        dataset=args.dataset,
        data_dir=args.data_dir,
    )
    if args.json:
        yield json.dumps([p.to_dict(names) for p in predictions], indent=2)
        return
    for prediction in predictions:
        yield format_prediction(prediction, names)


COMMANDS = {"predict": _predict}
