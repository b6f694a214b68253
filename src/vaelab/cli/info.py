"""`vaelab info`: a run's configuration, size and last metrics, as text or JSON."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.bundles import is_bundle, locate
from vaelab.cli.arguments import RUN_PATH, add_quiet, add_shared_arguments
from vaelab.cli.train_flags import OPTION_GROUPS
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.networks import count_parameters, prior_parameters
from vaelab.runs import check_run, scored_checkpoint
from vaelab.training.checkpoint import load_checkpoint, read_config, read_meta
from vaelab.training.metrics import read_metrics
from vaelab.training.precision import BF16, FP32
from vaelab.training.runs import BEST, LAST


@dataclass(frozen=True)
class Info:
    """`vaelab info`'s report, and the error to exit with after printing it (or None)."""

    text: str
    error: str | None


def _other_checkpoint(run: Path, checkpoint: Path) -> str:
    """How to ask for the run's other checkpoint, or "" when it has none."""
    other = {BEST: LAST, LAST: BEST}.get(checkpoint.name)
    if other is None or not (checkpoint.parent / other).is_dir():
        return ""
    if run.resolve() == checkpoint.resolve():  # given a checkpoint folder: name the other
        return f"; {checkpoint.parent / other} might work"
    return f"; --checkpoint {other} might work"


def _info_report(run: Path, prefer: str | None) -> dict[str, Any]:
    """The report; with unreadable weights, "weights_error" says why and the parameters are
    counted on a model built from config.json."""
    check_run(run)
    found = locate(run, prefer=prefer or scored_checkpoint(run))
    checkpoint = found.checkpoint
    meta, config = read_meta(checkpoint), read_config(checkpoint)
    weights_error = None
    try:
        model, _, _ = load_checkpoint(checkpoint)
    except VaelabError as error:  # meta and config are fine, so it is the weights
        model = build_model(config.model)
        weights_error = (
            f"the weights of checkpoint {checkpoint} are unreadable: {error}"
            f"{_other_checkpoint(run, checkpoint)}"
        )
    history = read_metrics(found.records)
    prior = model.prior if model.prior_fitted_after_training else None
    prior_count = prior_parameters(model)
    last = history[-1] if history else meta.get("metrics", {})
    precision = meta.get("precision") or meta.get("metrics", {}).get("precision")
    if precision is None and not config.train.amp:  # runs from before it was recorded
        precision = FP32
    return {
        "run": str(run if is_bundle(run) else found.home),
        "checkpoint": str(run if is_bundle(run) else checkpoint),
        "checkpoint_epoch": meta.get("epoch"),
        "epochs_done": history[-1].get("epoch") if history else meta.get("epoch"),
        "parameters": count_parameters(model) - prior_count,
        "prior": None if prior is None else prior.describe(),
        "prior_parameters": prior_count,
        "precision": precision,  # of the checkpoint's training steps; None: not recorded
        "precision_by_epoch": [record.get("precision") for record in history],
        "weights_error": weights_error,
        "config": config.to_dict(),
        "last_metrics": last,
    }


def info(run: Path, *, checkpoint: str | None = None, as_json: bool = False) -> Info:
    """A run's (or checkpoint's) configuration, size and last metrics, as text or JSON; the
    report is made even when the checkpoint's weights are unreadable, with `error` set.

    The text is valid TOML that `vaelab train --config` accepts: the configuration as its
    [model] [data] [optim] [train] tables, everything else as comments."""
    report = _info_report(run, checkpoint)
    error = report["weights_error"]
    if as_json:
        return Info(json.dumps(report, indent=2), error)
    epochs = report["config"]["train"]["epochs"]
    counted = " (counted from config.json)" if error else ""
    lines = [
        f"# run         {report['run']}",
        f"# epochs      {report['epochs_done']} of {epochs}",
        f"# checkpoint  {report['checkpoint']} (epoch {report['checkpoint_epoch']})",
        f"# parameters  {report['parameters']:,}{counted}",
    ]
    lines.append(
        f"# precision   {_precision_in_words(report['precision'])}"
        f"{_precision_changes(report['precision_by_epoch'])}"
    )
    if report["prior"] is not None:
        lines.append(f"# prior       {report['prior']}, {report['prior_parameters']:,} parameters")
    if error:
        other = _other_checkpoint(run, Path(report["checkpoint"]))
        lines.append(f"# weights     UNREADABLE{other}")
    lines.append("# the configuration, as `vaelab train --config FILE` reads it:")
    lines += config_toml(report["config"])
    lines += ["", "# last metrics"]
    lines += [
        f"#   {key} = {value:.6g}" if isinstance(value, float) else f"#   {key} = {value}"
        for key, value in report["last_metrics"].items()
    ]
    return Info("\n".join(lines), error)


def _precision_in_words(precision: str | None) -> str:
    if precision == BF16:
        return "bf16 (--amp: bfloat16 networks; fp32 weights and loss)"
    if precision == FP32:
        return "fp32"
    return "not recorded (trained with --amp by an older vaelab)"


def _precision_changes(by_epoch: list[str | None]) -> str:
    """Where a resumed run changed its precision: "; epochs 1-2 fp32, 3-4 bf16"."""
    spans: list[tuple[int, int, str | None]] = []
    for epoch, precision in enumerate(by_epoch, start=1):
        if spans and spans[-1][2] == precision:
            spans[-1] = (spans[-1][0], epoch, precision)
        else:
            spans.append((epoch, epoch, precision))
    if len(spans) < 2:
        return ""
    words = [
        f"{first}-{last} {precision or 'not recorded'}"
        if first != last
        else f"{first} {precision or 'not recorded'}"
        for first, last, precision in spans
    ]
    return "; by epoch: " + ", ".join(words)


# What a None option means, in the words `vaelab train --help` uses for its default.
UNSET = {
    (section, option.field): option.unset
    for section, options in OPTION_GROUPS.items()
    for option in options
}


def config_in_words(config: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{section: {option: value}} with each None replaced by what it means (e.g. "learned"),
    for pages that show a configuration to read rather than to load."""
    return {
        section: {
            key: UNSET.get((section, key), "none") if value is None else value
            for key, value in values.items()
        }
        for section, values in config.items()
    }


def config_toml(config: dict[str, dict[str, Any]]) -> list[str]:
    """{section: {option: value}} as TOML lines. TOML has no null, so an option that is None
    is left out (the config then takes its default, which is None) and shown as a comment
    saying what it means, e.g. `# sigma: learned`."""
    lines = []
    for section, values in config.items():
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key}: {UNSET.get((section, key), 'none')}")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return lines


def _toml_value(value: Any) -> str:
    """A TOML value for a config option: a string, bool, number or list of them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):  # a basic string; TOML allows no raw control character or DEL
        return '"' + _TOML_ESCAPED.sub(_toml_escape, value) + '"'
    return json.dumps(value)  # JSON's numbers and true/false are TOML's too


_TOML_ESCAPED = re.compile(r'[\x00-\x1f\x7f"\\]')


def _toml_escape(match: re.Match[str]) -> str:
    char = match[0]
    return "\\" + char if char in '"\\' else f"\\u{ord(char):04x}"


def add_parsers(subparsers: Any) -> None:
    """The `info` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="a run's configuration and last metrics",
        description="A run's configuration, size and last metrics, as TOML: the "
        "configuration is the [model] [data] [optim] [train] tables that `vaelab train "
        "--config` reads (an unset option is a comment saying what that means, e.g. "
        "'# sigma: learned'), the rest is comments. When the checkpoint's "
        "weights cannot be read, the report is still printed (parameters counted from "
        "config.json), and then the command exits with code 1 and an error naming the problem.",
    )
    parser.add_argument("run", metavar="RUN", help=RUN_PATH)
    add_shared_arguments(parser, checkpoint=True)
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    add_quiet(parser)


def _info(args: argparse.Namespace) -> Iterator[str]:
    """The report first, then (with unreadable weights) the error: both reach the user."""
    report = info(Path(args.run), checkpoint=args.checkpoint, as_json=args.json)
    yield report.text
    if report.error:
        raise VaelabError(report.error)


COMMANDS = {"info": _info}
