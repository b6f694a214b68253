"""The lines `vaelab eval` adds for a conditional run (cvae, m2): what its bound is on, an
m2's classifier accuracy, and the label fidelity of its samples (`analysis.labels`)."""

from __future__ import annotations

from typing import Any

from vaelab.analysis.evaluate import EvalResult


def nll_label(result: EvalResult) -> str:
    """The name of the NLL row: "NLL, k=K" for an unconditional run (as it always was), the
    quantity bounded for a conditional one ("NLL -log p(x|y), k=K")."""
    if result.nll_of is None:
        return f"NLL, k={result.k:<13}"
    return f"{f'NLL {result.nll_of}, k={result.k}':<20}"


def nll_note(result: EvalResult) -> str:
    """What a conditional run's NLL row adds in brackets before its standard error."""
    if result.accuracy is not None or result.kl_label is not None:  # m2
        return "y marginalised: sum over the classes of p(y) p(x|y); "
    if result.nll_of is not None and "unobserved" in result.nll_of:
        return "the unobserved pixels given the observed ones; "
    return ""


def elbo_note(result: EvalResult) -> str:
    """An m2's KL row: the share of its KL that is the label's."""
    if result.kl_label is None:
        return ""
    return f", of which KL(q(y|x) || p(y)) {result.kl_label:.3f}"


def conditional_lines(result: EvalResult, record: dict[str, Any]) -> list[str]:
    """An m2's classifier accuracy, and the label fidelity of a label-conditional run."""
    lines = []
    if result.accuracy is not None:
        labelled = sum(map(sum, result.confusion or []))
        lines.append(
            f"  classifier accuracy  {result.accuracy:10.4f}   (q(y|x)'s most probable class, on "
            f"{labelled:,} labelled {record.get('split', '')} images)"
        )
    fidelity = record.get("label_fidelity")
    if isinstance(fidelity, dict):
        lines += fidelity_lines(fidelity)
    return lines


def fidelity_lines(fidelity: dict[str, Any]) -> list[str]:
    """The label fidelity of an eval.json record, per class, and the classifier's accuracy."""
    per_class = fidelity.get("per_class", [])
    names = fidelity.get("class_names") or [str(c) for c in range(len(per_class))]
    shown = "  ".join(f"{name}: {share:.3f}" for name, share in zip(names, per_class, strict=False))
    return [
        f"  label fidelity       {fidelity['mean']:10.4f}   (mean over {len(per_class)} classes "
        f"of the share of {fidelity.get('samples_per_class', '?')} samples drawn with label y "
        f"that the classifier assigns to y; seed {fidelity.get('seed', '?')})",
        f"    per class          {shown}",
        f"    classifier         {fidelity.get('classifier_accuracy', float('nan')):10.4f}   "
        f"its own {fidelity.get('classifier_split', 'test')} accuracy (the cached classifier "
        "`vaelab compare` uses): a ceiling on what label fidelity can show",
    ]
