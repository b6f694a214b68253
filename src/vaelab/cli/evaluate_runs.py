"""`vaelab eval RUN1 RUN2 ...`: the runs side by side, with the mean and standard deviation of
each measure over them (the seeds of one setting, say)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (name in the table, the record's key): the measures compared across runs.
COLUMNS = (("accuracy", "accuracy"), ("label fidelity", "label_fidelity"))


def _values(records: Sequence[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Each measure's value in each record (None where a record has none), by column name."""
    nll_of = {record.get("nll_of", "-log p(x)") for record in records}
    nll_name = f"NLL {nll_of.pop()}" if len(nll_of) == 1 else "NLL"
    columns: dict[str, list[float | None]] = {nll_name: [r.get("nll") for r in records]}
    for name, key in COLUMNS:
        values = [r.get(key) for r in records]
        values = [v.get("mean") if isinstance(v, dict) else v for v in values]
        if any(v is not None for v in values):
            columns[name] = values
    return columns


def summary(runs: Sequence[Path], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For each measure: its mean and sample standard deviation (n - 1) over the runs that
    have it, and how many those are; for --json."""
    out = {}
    for name, values in _values(records).items():
        known = [v for v in values if v is not None]
        if name == "NLL":  # bounds on different quantities (-log p(x), -log p(x|y)): no mean
            known = []
        out[name] = {
            "mean": statistics.fmean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None,
            "runs": len(known),
        }
    return {"runs": [str(run) for run in runs], "measures": out}


def summary_table(runs: Sequence[Path], records: Sequence[dict[str, Any]]) -> str:
    """One row per run, then the mean ± standard deviation over them of every measure."""
    columns = _values(records)
    width = max(len("mean ± std"), *(len(str(run)) for run in runs))
    cell = max(16, *(len(name) for name in columns))
    head = f"  {'run':<{width}}" + "".join(f"  {name:>{cell}}" for name in columns)
    lines = [f"{len(runs)} runs:", head]
    for i, run in enumerate(runs):
        row = "".join(f"  {_number(values[i]):>{cell}}" for values in columns.values())
        lines.append(f"  {str(run):<{width}}{row}")
    stats = summary(runs, records)["measures"]
    row = "".join(f"  {_spread(stats[name]):>{cell}}" for name in columns)
    lines.append(f"  {'mean ± std':<{width}}{row}")
    if "NLL" in columns:
        lines.append("  (the NLLs bound different quantities, so they have no mean)")
    if len({(record.get("dataset"), record.get("split")) for record in records}) > 1:
        lines.append("  (the runs were scored on different data or splits)")
    lines.append("  (std: the sample standard deviation over the runs, n - 1)")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _spread(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    if stats["std"] is None:
        return f"{stats['mean']:.4f}"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"
