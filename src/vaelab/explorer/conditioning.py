"""How the explorer's endpoints treat a run's condition: the class label a request gives is
checked against the run (required by a label-conditional run, refused by an unconditional one),
and a completion model, which decodes only with the observed part of an image, is refused with
a pointer to `vaelab complete`."""

from __future__ import annotations

import torch
from fastapi import HTTPException

from vaelab.explorer.runs import ServedRun


def refuse_completion(run: ServedRun) -> None:
    """A 400 for a completion model (a cvae trained with --observe): its decoder needs the
    observed part of an image, which a point of the map does not have."""
    if run.observe:
        raise HTTPException(
            400,
            f"run {run.name!r} is a completion model (cvae --observe {run.observe}): decoding "
            "needs the observed part of an image, so the explorer does not decode, sample, "
            "interpolate or reconstruct with it; use `vaelab complete` to complete images",
        )


def checked_label(run: ServedRun, label: int | None) -> int | None:
    """A request's `label`, checked against `run`: a 422 where a conditional run has none or one
    out of range, or an unconditional run is given one. None for an unconditional run."""
    if not run.conditional:
        if label is not None:
            raise HTTPException(
                422, f"run {run.name!r} is not conditional on a class label: leave out 'label'"
            )
        return None
    last = run.classes - 1
    if label is None:
        raise HTTPException(
            422,
            f"run {run.name!r} ({run.config.model.model}) is conditional on a class label: "
            f"give 'label', 0 to {last}",
        )
    if label > last:
        raise HTTPException(
            422, f"label {label} is out of range: run {run.name!r} has classes 0 to {last}"
        )
    return label


def decode_labels(run: ServedRun, label: int | None, n: int) -> torch.Tensor | None:
    """The labels (n,) to decode n codes of `run` with, from a request's `label`: None for an
    unconditional run; an HTTPException for a completion model or a bad label."""
    refuse_completion(run)
    label = checked_label(run, label)
    return None if label is None else torch.full((n,), label, dtype=torch.long)
