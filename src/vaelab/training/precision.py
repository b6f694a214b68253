"""The arithmetic a run trains or evaluates in: fp32, or bfloat16 networks (`--amp`).

With `--amp` the networks run under `torch.autocast` in bfloat16, on a CUDA device or on a CPU
with native bfloat16 instructions (AVX512-BF16 or AMX, which oneDNN uses for matrix products).
Everything else stays in fp32: the weights the optimiser updates, and the loss terms (the
log-likelihood, the KL, the importance weights), which the model parts compute from their
networks' outputs cast back to fp32 (see `models.distributions.at_least_float32`).

On a CPU without native bfloat16 it would be emulated, slower than fp32, so `--amp` says so in
one line and the run trains in fp32; the precision used is written to metrics.jsonl.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

FP32, BF16 = "fp32", "bf16"
# "1" or "0" overrides the detection below: to use a CPU's bfloat16 units vaelab does not know
# (an Arm CPU's, say), or to see what a CPU without them does.
NATIVE_BF16_VARIABLE = "VAELAB_NATIVE_BF16"


@dataclass(frozen=True)
class Precision:
    """How the networks compute: `name` is "fp32" or "bf16" (autocast on `device_type`)."""

    name: str = FP32
    device_type: str = "cpu"

    @property
    def reduced(self) -> bool:
        return self.name == BF16

    def autocast(self) -> AbstractContextManager[Any]:
        """The block's networks in bfloat16 (a no-op for fp32)."""
        if not self.reduced:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively, i.e. faster than in fp32: a CUDA GPU
    with bfloat16 units (Ampere or later), or an x86 CPU with AVX512-BF16 or AMX.
    $VAELAB_NATIVE_BF16 (1 or 0), where set, answers instead."""
    override = os.environ.get(NATIVE_BF16_VARIABLE, "").strip()
    if override in ("0", "1"):
        return override == "1"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def cpu_bf16_units() -> str:
    """This CPU's bfloat16 instructions, in words (for the benchmarks)."""
    units = [
        name
        for name, present in (
            ("AMX", torch.cpu._is_amx_tile_supported()),
            ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
        )
        if present
    ]
    return " and ".join(units) if units else "none (bfloat16 would be emulated)"


def choose_precision(
    amp: bool, device: torch.device, *, warn: bool = True, option: str = "--amp"
) -> Precision:
    """fp32 unless `amp`; bf16 with `amp` where `device` has native bfloat16. Without it the
    fallback to fp32 is said in one line (a warning, unless not `warn`), since bf16 would only
    be slower."""
    if not amp:
        return Precision(FP32, device.type)
    if native_bf16(device):
        return Precision(BF16, device.type)
    if warn:
        logger.warning("%s: %s; running in fp32", option, _missing(device))
    return Precision(FP32, device.type)


def _missing(device: torch.device) -> str:
    """Why `device` gets no bfloat16, in words."""
    if device.type == "cpu":
        return (
            "no native bfloat16 on this CPU (no AVX512-BF16 or AMX detected), where it would "
            f"be emulated and slower; {NATIVE_BF16_VARIABLE}=1 uses it anyway"
        )
    if device.type == "cuda":
        return f"{device} has no native bfloat16 (it needs an Ampere or later GPU)"
    return f"vaelab does not use bfloat16 on {device.type} devices"
