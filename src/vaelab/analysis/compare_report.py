"""What `vaelab compare` reports: the measures' names, the result, and its JSON and markdown."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vaelab.analysis import measures
from vaelab.errors import VaelabError

# measure key -> (row title, key in measures.DEFINITIONS); the table's rows, in order
MEASURES: dict[str, tuple[str, str]] = {
    "decodable_prior": ("decodable, z ~ prior", "decodable"),
    "decodable_box": ("decodable, z ~ U(code box)", "decodable"),
    "confidence_prior": ("confidence, z ~ prior", "confidence"),
    "confidence_box": ("confidence, z ~ U(code box)", "confidence"),
    "entropy_prior": ("entropy, z ~ prior", "entropy"),
    "entropy_box": ("entropy, z ~ U(code box)", "entropy"),
    "gap_fraction": ("gap fraction of the code box", "gap_fraction"),
    "jump_mean": ("interpolation jump, mean over pairs", "jump"),
    "jump_max": ("interpolation jump, max over pairs", "jump"),
    "midpoint_confidence": ("confidence at path midpoints", "midpoint_confidence"),
    "frechet_prior": ("Frechet distance, z ~ prior", "frechet"),
    "frechet_gmm": ("Frechet distance, z ~ GMM", "frechet"),
}
NEEDS_CLASSIFIER = {"decodable", "confidence", "entropy", "midpoint_confidence", "frechet"}


@dataclass(frozen=True)
class Settings:
    """Sample sizes and randomness of a comparison."""

    samplers: tuple[str, ...] = ("prior",)  # "prior" always; "gmm" adds a fitted mixture
    n_samples: int = 2000  # random codes per decodability measure and per Frechet distance
    n_pairs: int = 100  # test pairs for interpolation smoothness
    steps: int = 16  # frames per interpolation path
    n_box: int = 10000  # box points for the gap fraction
    max_codes: int = 10000  # training codes the gap fraction compares against (subsampled)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_pairs", "n_box", "max_codes"):
            if getattr(self, name) < 2:
                raise VaelabError(f"{name} must be at least 2, got {getattr(self, name)}")
        if self.steps < 2:
            raise VaelabError(f"an interpolation needs at least 2 steps, got {self.steps}")


@dataclass(frozen=True)
class RunMeasures:
    """One run's measures (None where unavailable; see `ComparisonResult.unavailable`)."""

    run: Path
    model: str  # "vae", "ae" or "dae"
    latent_dim: int
    measures: dict[str, float | None]


@dataclass(frozen=True)
class ComparisonResult:
    """What `compare_runs` measured and wrote."""

    dataset: str
    runs: list[RunMeasures]
    settings: Settings
    classifier: dict[str, Any]  # test accuracy, the split it was measured on, cache folder
    test_images: int  # the Frechet distances compare samples with this many test images
    reference_frechet: float | None  # training vs test images: the floor at this sample size
    reference_samples: int  # training images in the reference
    unavailable: dict[str, str]  # measure key -> why it is missing
    figure: Path
    json: Path
    table: Path


def result_json(result: ComparisonResult) -> dict[str, Any]:
    """The result as JSON-able values (NaN as null)."""

    def number(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else value

    return {
        "dataset": result.dataset,
        "settings": asdict(result.settings),
        "classifier": result.classifier,
        "test_images": result.test_images,
        "reference_frechet": number(result.reference_frechet),
        "reference_samples": result.reference_samples,
        "runs": [
            {
                "run": str(r.run),
                "model": r.model,
                "latent_dim": r.latent_dim,
                "measures": {k: number(v) for k, v in r.measures.items()},
            }
            for r in result.runs
        ],
        "unavailable": result.unavailable,
        "definitions": measures.DEFINITIONS,
    }


def markdown_table(result: ComparisonResult) -> str:
    """The comparison as markdown: settings, a table (a row per measure), the definitions."""
    s = result.settings
    lines = [f"# Comparison on {result.dataset}", ""]
    c = result.classifier
    if c["available"]:
        lines.append(
            f"Classifier: accuracy {c['accuracy']:.4f} on the {c['accuracy_split']} "
            f"split (cached in `{c['cache']}`)."
        )
    else:
        lines.append(f"Classifier: unavailable — {c['reason']}.")
    lines += [
        f"Samples: {s.n_samples} per sampler and per decodability measure; {len(result.runs)} "
        f"runs; interpolation over up to {s.n_pairs} test pairs x {s.steps} frames; gap fraction "
        f"from {s.n_box} box points against at most {s.max_codes} training codes; seed {s.seed}.",
    ]
    if result.reference_frechet is not None:
        lines.append(
            f"Frechet distances compare {s.n_samples} samples with {result.test_images} "
            f"test images; {result.reference_samples} training images score "
            f"{result.reference_frechet:.3f} (the floor)."
        )
    names = [f"{run_name(r.run)} ({r.model}, D={r.latent_dim})" for r in result.runs]
    lines += ["", "| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, (title, _) in MEASURES.items():
        cells = [_cell(r.measures.get(key)) for r in result.runs]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    reasons: dict[str, list[str]] = {}
    for key, why in result.unavailable.items():
        reasons.setdefault(why, []).append(MEASURES[key][0])
    if reasons:
        lines += ["", "Not measured:"]
        lines += [f"- {', '.join(titles)}: {why}" for why, titles in reasons.items()]
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name}**: {text}." for name, text in measures.DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def run_name(run: Path) -> str:
    return Path(run).resolve().name
