"""A run's report as HTML: one self-contained page with its figures, configuration, metrics
and evaluation results. No scripts, no external assets: the PNGs are embedded as base64 data
URIs, so the file can be mailed or archived on its own."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaelab.disentanglement.evaluate import DisentanglementResult

CAPTIONS = {
    "latent_map": "Codes of the split (the posterior mean μ for a VAE), coloured by class; with "
    "more than two latent dimensions, on the plane of their first two principal axes (fitted on "
    "all the split's codes, the plane the manifold and the explorer use).",
    "manifold": "Images decoded on a grid of codes: the prior's quantiles for a VAE with at most "
    "two latent dimensions, the codes' own quantiles for an autoencoder, an even grid over the "
    "codes' first two principal axes beyond two dimensions.",
    "samples": "Images decoded from codes drawn from the model's prior (N(0, I) for a VAE and, "
    "for lack of one, an autoencoder; a VQ-VAE's fitted PixelCNN).",
    "reconstructions": "Images spread evenly over the split, each above its reconstruction.",
    "interpolations": "Decoded codes along the path between the codes of two images.",
    "traversals": "Decoded codes moved along one latent dimension at a time.",
    "curves": "Loss, reconstruction and KL per epoch (nats per example); the KL panel starts at "
    "0 and no panel spans less than 2 nats or 10% of its values, so noise stays small.",
    "factor_mutual_info": "The mutual information I(z_j; v_k) of each latent z_j (the posterior "
    "mean, in 20 equal-width bins) with each factor v_k, divided by the factor's entropy H(v_k): "
    "the share of the factor each latent holds (MIG's matrix, Chen et al. 2018). A disentangled "
    "code has one bright cell per column, in different rows.",
    "factor_traversals": "Each latent moved on its own, the others at the code of one image, "
    "decoded. A row is labelled with the factor the latent captures (the factor of which it "
    "holds the largest share of entropy, when that share is at least 0.2) and that share; "
    '"none" for a latent that holds no such share (inactive, or mixing factors).',
}


def figure_captions(*, latent_dim: int, has_prior: bool) -> dict[str, str]:
    """CAPTIONS, with the manifold's saying which grid `vaelab.analysis.grids` decodes for a
    model with `latent_dim` dimensions, with the prior N(0, I) (a VAE's) or not."""
    if latent_dim > 2:
        manifold = (
            "Images decoded on an even grid over the first two principal axes of the codes "
            "(±2 standard deviations along each, the other directions at the mean): the latent "
            "map's plane."
        )
    elif has_prior:
        manifold = (
            "Images decoded on a grid of the prior's quantiles z = Φ⁻¹(p), p evenly from 0.05 to "
            "0.95 (Kingma & Welling 2013, fig. 4): even in probability, denser near 0 in z."
        )
    else:
        manifold = (
            "Images decoded on a grid of the quantiles 5% … 95% of the codes' own marginals (the "
            "model has no prior, or one other than N(0, I)): even in probability, not in z."
        )
    traversals = (
        " The latent moves ±2.5 (the prior's standard deviations) around that image's value, "
        "so the middle column is its reconstruction."
        if has_prior
        else " The latent moves from the 5% to the 95% quantile of its codes over the images."
    )
    return {
        **CAPTIONS,
        "manifold": manifold,
        "factor_traversals": CAPTIONS["factor_traversals"] + traversals,
    }


@dataclass(frozen=True)
class EvalSection:
    """One record of eval.json, as the report shows it."""

    key: str  # its key in eval.json, e.g. "best/test/k=5000"
    text: str  # the table `vaelab eval` prints, or why the record cannot be shown
    kl_per_dim: Sequence[float] | None = None  # nats, in dimension order (z_1 first)


@dataclass(frozen=True)
class DisentanglementSection:
    """The disentanglement of a run whose data has known factors, as the report shows it."""

    note: str  # what was scored: the split, how many images, the seed
    scores: Mapping[str, float]  # `DisentanglementResult.scores`
    definitions: Mapping[str, str]  # by metric: how each score is computed
    per_factor: Sequence[Mapping[str, Any]]  # one row per factor
    figures: Sequence[tuple[str, str, bytes]]  # (name, caption, PNG bytes)

    @classmethod
    def from_result(
        cls,
        result: DisentanglementResult,
        *,
        note: str,
        figures: Sequence[tuple[str, str, bytes]],
    ) -> DisentanglementSection:
        """The section of `result`: its scores, definitions and per-factor figures."""
        definitions = result.to_dict()["definitions"]
        return cls(note, result.scores, definitions, result.per_factor(), figures)


@dataclass(frozen=True)
class ConditionalSection:
    """What a run conditional on class labels (cvae, m2) adds to its report."""

    note: str  # what the model is conditioned on, and where the figures come from
    figures: Sequence[tuple[str, str, bytes]]  # (name, caption, PNG bytes)
    class_names: Sequence[str]
    fidelity: Mapping[str, Any] | None  # `vaelab.analysis.labels.fidelity_record`
    fidelity_note: str  # how it was measured, or why it was not
    accuracy: float | None = None  # an m2's classifier on the labelled images of the split
    confusion: Sequence[Sequence[int]] | None = None  # rows the true class, columns predicted
    classified: str = ""  # which images the accuracy and confusion matrix are of


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 0.5em; }
.scroll { overflow-x: auto; }
table.confusion td { text-align: right; min-width: 2.5em; }
iframe.live { width: 100%; height: 1250px; border: 1px solid #ddd; border-radius: 4px; }
"""


def render_report(
    *,
    title: str,
    summary: Mapping[str, Any],
    figures: Sequence[tuple[str, str, bytes]],
    config: Mapping[str, Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    evaluation: Sequence[EvalSection] | None = None,
    disentanglement: DisentanglementSection | None = None,
    conditional: ConditionalSection | None = None,
    live: str | None = None,
) -> str:
    """The report page. `figures` are (name, caption, PNG bytes); `config` is
    {section: {option: value}}; `records` the per-epoch metrics; `evaluation` the records of
    eval.json, or None for none; `disentanglement` for data with known factors, or None;
    `conditional` for a run conditional on class labels, or None; `live` the HTML of the
    live latent map (vaelab.explorer.offline's, which escapes its own text), or None. Every
    other piece of text is HTML-escaped."""
    parts = [f"<h1>{_e(title)}</h1>", key_value_table(summary)]
    if live is not None:
        parts.append(live)
    parts.append("<h2>Figures</h2>")
    parts += [_figure(name, caption, png) for name, caption, png in figures]
    if conditional is not None:
        parts.append(_conditional(conditional))
    if disentanglement is not None:
        parts.append(_disentanglement(disentanglement))
    if evaluation is not None:
        parts.append("<h2>Evaluation (eval.json)</h2>")
        parts += [_evaluation(section) for section in evaluation]
    parts.append("<h2>Metrics</h2>")
    if records:
        parts += [
            "<h3>Last epoch</h3>",
            key_value_table(records[-1]),
            "<h3>Every epoch</h3>",
            records_table(records),
        ]
    else:
        parts.append("<p>No metrics were recorded (metrics.jsonl is missing or empty).</p>")
    parts.append("<h2>Configuration</h2>")
    for section, options in config.items():
        parts += [f"<h3>{_e(section)}</h3>", key_value_table(options)]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _figure(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name)}"><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
        f"<figcaption><b>{_e(name)}.png</b> — {_e(caption)}</figcaption></figure>"
    )


def _evaluation(section: EvalSection) -> str:
    """The record's `vaelab eval` table, then its KL per dimension labelled z_1, z_2, ..."""
    html_parts = [f"<h3>{_e(section.key)}</h3>", f"<pre>{_e(section.text)}</pre>"]
    if section.kl_per_dim:
        head = "".join(f"<th>z<sub>{d}</sub></th>" for d in range(1, len(section.kl_per_dim) + 1))
        cells = "".join(_cell(float(v)) for v in section.kl_per_dim)
        html_parts.append(
            "<p>KL per latent dimension (nats), in dimension order:</p>"
            f'<div class="scroll"><table><tr>{head}</tr><tr>{cells}</tr></table></div>'
        )
    return "\n".join(html_parts)


def _disentanglement(section: DisentanglementSection) -> str:
    """Scores, their definitions, the per-factor table, then the figures."""
    parts = [
        '<h2 id="disentanglement">Disentanglement</h2>',
        f"<p>{_e(section.note)}</p>",
        "<h3>Scores</h3>",
        key_value_table(section.scores),
        "<h3>Definitions</h3>",
        key_value_table(section.definitions),
        "<h3>Per factor</h3>",
        records_table(section.per_factor),
    ]
    parts += [_figure(name, caption, png) for name, caption, png in section.figures]
    return "\n".join(parts)


def _conditional(section: ConditionalSection) -> str:
    """The class-conditional figures, the label fidelity per class and, for an m2, its
    classifier's accuracy and confusion matrix."""
    parts = ['<h2 id="conditional">Conditional model</h2>', f"<p>{_e(section.note)}</p>"]
    parts += [_figure(name, caption, png) for name, caption, png in section.figures]
    parts += ['<h3 id="label-fidelity">Label fidelity</h3>', f"<p>{_e(section.fidelity_note)}</p>"]
    if section.fidelity is not None:
        shares = section.fidelity["per_class"]
        rows = [
            {"class": name, "label fidelity": float(share)}
            for name, share in zip(section.class_names, shares, strict=False)
        ]
        rows.append({"class": "mean over the classes", "label fidelity": section.fidelity["mean"]})
        parts.append(records_table(rows))
    if section.accuracy is not None:
        parts += [
            '<h3 id="classifier">Classifier q(y|x)</h3>',
            f"<p>Accuracy {section.accuracy:.4f} on {_e(section.classified)}: the class the "
            "model's own classifier finds most probable, against the label.</p>",
        ]
    if section.confusion is not None:
        parts += [
            "<p>Confusion matrix: row i, column j counts the images of class i classified as "
            "j; a cell's shade is its share of its row.</p>",
            confusion_table(section.confusion, section.class_names),
        ]
    return "\n".join(parts)


def confusion_table(confusion: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """A K x K table of counts, rows the true class and columns the predicted one, each cell
    shaded by its share of its row (a heat map that stays text)."""
    head = "".join(f"<th>{_e(name)}</th>" for name in names)
    rows = []
    for name, row in zip(names, confusion, strict=False):
        total = max(sum(row), 1)
        cells = "".join(
            f'<td style="background: rgba(31, 119, 180, {count / total:.2f})">{count}</td>'
            for count in row
        )
        rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    body = "\n".join(rows)
    return (
        f'<div class="scroll"><table class="confusion">\n<tr><th>true ↓ predicted →</th>{head}'
        f"</tr>\n{body}\n</table></div>"
    )


def format_value(value: Any) -> str:
    """A value as table text: floats to 4 significant digits, lists and None as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    css = ' class="num"' if _is_number(value) else ""
    return f"<td{css}>{_value(value)}</td>"


def _value(value: Any, depth: int = 0) -> str:
    """Scalars and flat lists as text; a mapping as a nested table (two levels deep); other
    structures as indented JSON."""
    if isinstance(value, Mapping) and depth < 2:
        return key_value_table(value, depth=depth + 1)
    flat = isinstance(value, list | tuple) and not any(isinstance(v, Mapping | list) for v in value)
    if isinstance(value, Mapping | list | tuple) and not flat:
        return f"<pre>{_e(json.dumps(value, indent=2, default=str))}</pre>"
    return _e(format_value(value))


def key_value_table(values: Mapping[str, Any], *, depth: int = 0) -> str:
    """A two-column table of option / value (nested mappings become nested tables)."""
    rows = []
    for key, value in values.items():
        cell = f"<td>{_value(value, depth)}</td>" if isinstance(value, Mapping) else _cell(value)
        rows.append(f"<tr><th>{_e(key)}</th>{cell}</tr>")
    return f"<table>{''.join(rows)}</table>"


def records_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per record, one column per key seen in any record (first-seen order)."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    rows = [
        "<tr>" + "".join(_cell(r[c]) if c in r else "<td></td>" for c in columns) + "</tr>"
        for r in records
    ]
    body = "\n".join(rows)
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n{body}\n</table></div>'
