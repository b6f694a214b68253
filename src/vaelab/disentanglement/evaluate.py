"""A model's disentanglement: encode images with known factors, then score the codes with all
four metrics; the result as a table, a JSON record, and which factor each latent captures."""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaelab.data import Factors
from vaelab.data.batches import iterate_batches
from vaelab.disentanglement.dci import DCIResult, dci
from vaelab.disentanglement.factorvae_score import FactorVAEResult, factorvae_score
from vaelab.disentanglement.mig import MIGResult, mig
from vaelab.disentanglement.mig_posterior import PosteriorMIGResult, mig_posterior
from vaelab.disentanglement.sap import SAPResult, sap
from vaelab.errors import VaelabError, plural
from vaelab.models import Autoencoder
from vaelab.models.distributions import DiagonalGaussian

WIDTH = 96  # of the printed table's wrapped lines
CAPTURE_THRESHOLD = 0.2  # share of a factor's entropy a latent must hold to be said to capture it


@dataclass(frozen=True, eq=False)
class DisentanglementResult:
    """The four metrics of one model on one set of images, and what they were computed on."""

    mig: MIGResult
    dci: DCIResult
    sap: SAPResult
    factorvae: FactorVAEResult
    factors: Factors
    # MIG from the full posterior q(z|x), Chen et al.'s own estimator; None for a model whose
    # posterior is a point (an autoencoder's, a VQ-VAE's)
    mig_posterior: PosteriorMIGResult | None
    examples: int
    latent_dim: int
    seed: int
    seconds: float

    @property
    def scores(self) -> dict[str, float]:
        """The headline numbers: MIG (binned means, and from the posterior where there is
        one), DCI's three, SAP and the FactorVAE score."""
        posterior = (
            {} if self.mig_posterior is None else {"mig_posterior": self.mig_posterior.score}
        )
        return {
            "mig": self.mig.score,
            **posterior,
            "dci_disentanglement": self.dci.disentanglement,
            "dci_completeness": self.dci.completeness,
            "dci_informativeness": self.dci.informativeness,
            "sap": self.sap.score,
            "factorvae_score": self.factorvae.score,
        }

    @property
    def normalised_mutual_info(self) -> np.ndarray:
        """I(z_j; v_k) / H(v_k), (D, F): the share of each factor's entropy each latent holds."""
        return self.mig.mutual_info / self.mig.factor_entropy[None, :]

    def captured_factors(self, threshold: float = CAPTURE_THRESHOLD) -> list[str | None]:
        """For each latent, the factor it holds the largest share of, where that share is at
        least `threshold`; None for a latent that captures no factor."""
        shares = self.normalised_mutual_info
        best = shares.argmax(axis=1)
        return [
            self.factors.names[k] if shares[j, k] >= threshold else None for j, k in enumerate(best)
        ]

    def per_factor(self) -> list[dict[str, Any]]:
        """One row per factor: its MIG terms, SAP gap, DCI completeness and accuracy, and the
        latent holding the largest share of it (as `vaelab eval` and the report show them)."""
        shares = self.normalised_mutual_info
        rows = []
        for k, name in enumerate(self.factors.names):
            top = int(self.mig.top_code[k])
            posterior = self.mig_posterior
            rows.append(
                {
                    "factor": name,
                    "MIG": float(self.mig.per_factor[k]),
                    "MIG (posterior)": None
                    if posterior is None
                    else float(posterior.per_factor[k]),
                    "SAP": float(self.sap.per_factor[k]),
                    "DCI completeness": float(self.dci.factor_completeness[k]),
                    "DCI accuracy": float(self.dci.test_accuracy[k]),
                    "top latent": f"z{top + 1}",
                    "its share of the factor": float(shares[top, k]),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """A JSON record: the scores, the per-factor figures, each metric's definition and
        settings, and the mutual-information matrix."""
        names = list(self.factors.names)
        metrics: dict[str, Any] = {"mig": self.mig}
        if self.mig_posterior is not None:
            metrics["mig_posterior"] = self.mig_posterior
        metrics |= {"dci": self.dci, "sap": self.sap, "factorvae": self.factorvae}
        return {
            "examples": self.examples,
            "latent_dim": self.latent_dim,
            "seed": self.seed,
            "seconds": self.seconds,
            "factors": names,
            "scores": self.scores,
            "mig_per_factor": dict(zip(names, self.mig.per_factor.tolist(), strict=True)),
            "mig_posterior_per_factor": None
            if self.mig_posterior is None
            else dict(zip(names, self.mig_posterior.per_factor.tolist(), strict=True)),
            "sap_per_factor": dict(zip(names, self.sap.per_factor.tolist(), strict=True)),
            "dci_completeness_per_factor": dict(
                zip(names, self.dci.factor_completeness.tolist(), strict=True)
            ),
            "dci_accuracy_per_factor": dict(
                zip(names, self.dci.test_accuracy.tolist(), strict=True)
            ),
            "mutual_info_nats": self.mig.mutual_info.tolist(),  # (D, F)
            "captured_factors": self.captured_factors(),
            "definitions": {name: result.definition for name, result in metrics.items()},
            "settings": {name: _jsonable(result.settings) for name, result in metrics.items()},
        }


def sample_rows(count: int, limit: int | None, *, seed: int = 0) -> torch.Tensor:
    """Indices of the images to score, in split order: all `count`, or a seeded random `limit`
    of them. Not the first ones: a split keeps its factor grid's order, so the first 10,000
    images of the shapes grid's test split would all be squares of the smallest scales."""
    if limit is None or count <= limit:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:limit].sort().values


def encode_codes(
    model: Autoencoder, x: torch.Tensor, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray | None]:
    """One pass over x (N, C, H, W) in eval mode: the posterior means (the codes) and, for a
    posterior that is a distribution (a VAE's), its log-variances, each float64 (N, D); None
    for a point posterior. Batches only bound memory (and move the float rounding of a matrix
    product, never more)."""
    was_training = model.training
    model.eval()
    means, logvars = [], []
    with torch.inference_mode():
        for batch in iterate_batches(x, batch_size, shuffle=False):
            posterior = model.encode(batch.to(model.device))
            means.append(posterior.mean.double().cpu())
            if isinstance(posterior, DiagonalGaussian):  # not a flow's or a hierarchy's
                logvars.append(posterior.logvar.double().cpu())
    model.train(was_training)
    logvar = torch.cat(logvars).numpy() if logvars else None
    return torch.cat(means).numpy(), logvar


def evaluate_disentanglement(
    model: Autoencoder,
    x: torch.Tensor,
    factors: torch.Tensor,
    info: Factors,
    *,
    batch_size: int = 1024,
    seed: int = 0,
) -> DisentanglementResult:
    """Score the codes of x (N, C, H, W), whose factor indices are `factors` (N, F), on MIG,
    DCI, SAP and the FactorVAE score (see `vaelab.disentanglement`). DCI and SAP train on a
    seeded 80 % of the images and are scored on the rest; the FactorVAE score draws its votes
    from `seed`."""
    if len(info.names) < 2:
        raise VaelabError(
            f"the disentanglement metrics compare latents across factors: they need 2 factors "
            f"or more, and this data has only {info.names[0]!r}"
        )
    if factors.shape != (len(x), len(info.names)):
        raise VaelabError(
            f"factors have shape {tuple(factors.shape)}, but {plural(len(x), 'image')} with "
            f"{plural(len(info.names), 'factor')} need ({len(x)}, {len(info.names)})"
        )
    started = time.perf_counter()
    codes, logvar = encode_codes(model, x, batch_size=batch_size)
    labels = factors.cpu().numpy()
    names = list(info.names)
    return DisentanglementResult(
        mig=mig(codes, labels, names=names),
        mig_posterior=None
        if logvar is None
        else mig_posterior(codes, logvar, labels, names=names, seed=seed),
        dci=dci(codes, labels, names=names, seed=seed),
        sap=sap(codes, labels, info.categorical, names=names, seed=seed),
        factorvae=factorvae_score(codes, labels, names=names, seed=seed),
        factors=info,
        examples=len(x),
        latent_dim=codes.shape[1],
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def format_disentanglement(result: DisentanglementResult) -> list[str]:
    """The table `vaelab eval --disentanglement` prints: each score with its definition and
    settings, then per factor the figures and the latent that captures it."""
    lines = [
        f"  disentanglement of {plural(result.latent_dim, 'latent')} against "
        f"{plural(len(result.factors.names), 'factor')} ({', '.join(result.factors.names)}), "
        f"seed {result.seed}, {result.seconds:.1f} s"
    ]
    posterior = result.mig_posterior
    rows: list[tuple[str, float, Any]] = [("MIG", result.mig.score, result.mig)]
    if posterior is not None:
        rows.append(("MIG (posterior)", posterior.score, posterior))
    rows += [
        ("DCI disentanglement", result.dci.disentanglement, result.dci),
        ("DCI completeness", result.dci.completeness, None),
        ("DCI informativeness", result.dci.informativeness, None),
        ("SAP", result.sap.score, result.sap),
        ("FactorVAE score", result.factorvae.score, result.factorvae),
    ]
    for title, value, metric in rows:
        lines.append(f"  {title:<22} {value:8.4f}")
        if metric is not None:
            settings = "; ".join(f"{k} {v}" for k, v in metric.settings.items())
            lines += textwrap.wrap(metric.definition, WIDTH, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)  # fmt: skip
            lines += textwrap.wrap(f"settings: {settings}", WIDTH, initial_indent=" " * 6,
                                   subsequent_indent=" " * 8)  # fmt: skip
    lines.append(
        "  per factor             MIG  MIG-q    SAP  DCI-C  DCI-acc  top latent (MI share)"
    )
    for row in result.per_factor():
        from_posterior = row["MIG (posterior)"]
        posterior_cell = "     -" if from_posterior is None else f"{from_posterior:6.3f}"
        lines.append(
            f"    {row['factor']:<18} {row['MIG']:6.3f} {posterior_cell} {row['SAP']:6.3f} "
            f"{row['DCI completeness']:6.3f} {row['DCI accuracy']:8.3f}  {row['top latent']} "
            f"({row['its share of the factor']:.2f})"
        )
    lines.append(
        "  (MIG-q: MIG from the posterior, Chen et al.'s estimator; the MI share is binned)"
    )
    return lines


def _jsonable(settings: dict[str, object]) -> dict[str, Any]:
    """Settings with NumPy values turned into plain numbers and lists."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out
