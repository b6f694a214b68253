"""A run's report: one self-contained HTML file with its figures, configuration, metrics and,
when RUN/eval.json exists, evaluation results. No scripts, no external assets: the PNGs are
embedded as base64 data URIs, so the file can be mailed or archived on its own."""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaelab._version import __version__
from vaelab.analysis.run_plots import (
    PLOTS_DIR,
    LoadedRun,
    check_options,
    draw_figures,
    load_run,
    save_figures,
)
from vaelab.errors import VaelabError
from vaelab.files import atomic_write_text
from vaelab.training.metrics import read_metrics
from vaelab.training.runs import EVAL_FILE

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"


CAPTIONS = {
    "latent_map": "Codes of the split (the posterior mean μ for a VAE), coloured by class.",
    "manifold": "Images decoded on a regular grid of the latent space.",
    "samples": "Images decoded from codes drawn from N(0, I).",
    "reconstructions": "Images of the split, each above its reconstruction.",
    "interpolations": "Decoded codes along the path between the codes of two images.",
    "traversals": "Decoded codes moved along one latent dimension at a time.",
    "curves": "Loss, reconstruction and KL per epoch (nats per example).",
}

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
"""


def write_report(
    run: str | Path,
    out: str | Path | None = None,
    *,
    projection: str = "pca",
    split: str | None = None,
    checkpoint: str = "best",
    max_points: int = 5000,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Draw a run's figures (as `plot_run`, into a `plots/` folder beside the report) and write
    one self-contained HTML report, by default RUN/report.html; return its path."""
    check_options(projection=projection, max_points=max_points)
    loaded = load_run(
        run, split=split, checkpoint=checkpoint, dataset=dataset, data_dir=data_dir, device=device
    )
    path = _report_path(loaded.run_dir, out)
    figures = draw_figures(loaded, projection=projection, max_points=max_points, seed=seed)
    pngs = save_figures(figures, path.parent / PLOTS_DIR)
    page = render_report(
        title=f"vaelab report: {loaded.run_dir.name}",
        summary=_summary(loaded, checkpoint=checkpoint, projection=projection),
        figures=[(p.stem, CAPTIONS[p.stem], p.read_bytes()) for p in pngs],
        config=loaded.config.to_dict(),
        records=read_metrics(loaded.run_dir),
        evaluation=read_evaluation(loaded.run_dir),
    )
    try:
        atomic_write_text(path, page)
    except OSError as error:
        raise VaelabError(f"cannot write {path}: {error.strerror or error}") from None
    logger.info("wrote %s", path)
    return path


def _report_path(run_dir: Path, out: str | Path | None) -> Path:
    if out is None:
        return run_dir / REPORT_FILE
    path = Path(out)
    if path.is_dir():
        path = path / REPORT_FILE
    if path.suffix.lower() not in (".html", ".htm"):
        raise VaelabError(f"--out {path} must be an .html file (or an existing folder)")
    if not path.parent.is_dir():
        raise VaelabError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def read_evaluation(run_dir: Path) -> Any:
    """The contents of RUN/eval.json, or None when there is none. A file that is not JSON is
    reported in the page (and logged) rather than stopping the report."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("%s could not be read (%s); the report leaves it out", path, error)
        return {"error": f"{path} could not be read: {error}"}


def _summary(loaded: LoadedRun, *, checkpoint: str, projection: str) -> dict[str, Any]:
    model, data = loaded.config.model, loaded.config.data
    return {
        "run": str(loaded.run_dir),
        "model": model.model,
        "latent dimensions": model.latent_dim,
        "architecture": model.architecture,
        "dataset": data.dataset,
        "image shape (C, H, W)": list(model.data_shape),
        "checkpoint": f"{checkpoint} (epoch {loaded.meta.get('epoch', '?')})",
        "figures drawn from": f"{len(loaded.x)} {loaded.split} images",
        "projection": projection if model.latent_dim > 2 else "none (2-D latent space)",
        "vaelab": __version__,
        "written": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- HTML ---------------------------------------------------------------------------------


def render_report(
    *,
    title: str,
    summary: Mapping[str, Any],
    figures: Sequence[tuple[str, str, bytes]],
    config: Mapping[str, Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    evaluation: Any = None,
) -> str:
    """The report page. `figures` are (name, caption, PNG bytes); `config` is
    {section: {option: value}}; `records` the per-epoch metrics; `evaluation` eval.json's
    contents or None. Every piece of text is HTML-escaped."""
    parts = [f"<h1>{_e(title)}</h1>", key_value_table(summary), "<h2>Figures</h2>"]
    parts += [_figure(name, caption, png) for name, caption, png in figures]
    if evaluation is not None:
        parts += ["<h2>Evaluation (eval.json)</h2>", _value(evaluation)]
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
