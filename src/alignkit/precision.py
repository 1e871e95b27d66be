"""Numeric precision chosen by what the hardware does natively (``precision: auto``).

bf16 halves memory traffic, but it is only *fast* where the matrix units multiply bf16 natively:
CUDA GPUs with bf16 support, x86 CPUs with AMX (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``),
Arm CPUs with the BF16 extension (``bf16`` in ``Features``). Elsewhere PyTorch emulates it and
bf16 runs 3-15x *slower* than fp32 (measured: 0.05 vs 0.20 TFLOP/s on a Xeon without either flag; a DPO step ~15x slower on an AVX2-only AMD EPYC).
``auto`` therefore picks bf16 only where the probe finds native support and fp32 otherwise; the
choice and its reason are printed and saved in every run summary.

The probe can be forced with the environment variable ``ALIGNKIT_PRECISION_PROBE``: ``bf16`` makes
``auto`` pick bf16 whatever the hardware, ``fp32`` makes it pick fp32, ``auto`` (or unset) probes.
``make test`` uses it to run the precision-sensitive tests a second time the other way from the
machine's own answer, so a CI machine without native bf16 still runs what a bf16 machine runs.
Explicit ``fp32``/``bf16`` requests are never affected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from alignkit.config import Precision  # noqa: F401  (the one precision type; torch-free, so it lives in alignkit.config)

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PROBE_ENV = "ALIGNKIT_PRECISION_PROBE"


@dataclass(frozen=True)
class Choice:
    """A resolved precision: ``fp32`` or ``bf16``, what was asked for, and why."""

    precision: Literal["fp32", "bf16"]
    requested: str
    reason: str

    @property
    def dtype(self) -> str:
        """The matching ``torch`` dtype name, for loading inference weights."""
        return "bfloat16" if self.precision == "bf16" else "float32"

    def as_dict(self) -> dict[str, str]:
        return {"precision": self.precision, "requested": self.requested, "reason": self.reason}


def _cpu_flags() -> set[str] | None:
    """Feature flags of the first CPU in /proc/cpuinfo (x86 ``flags``, Arm ``Features``); None if unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def forced_probe() -> str | None:
    """``bf16`` or ``fp32`` when :data:`PROBE_ENV` forces the probe's answer, None when it probes."""
    value = os.environ.get(PROBE_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "fp32", "bf16"):
        raise ValueError(f"{PROBE_ENV} must be auto, fp32 or bf16 (got {value!r})")
    return None if value == "auto" else value


def native_bf16(device: str | torch.device | None = None) -> tuple[bool, str]:
    """Probe whether ``device`` (default: CUDA if visible, else CPU) multiplies bf16 natively; (yes?, why).

    :data:`PROBE_ENV` set to ``bf16``/``fp32`` replaces the probe's answer (tests, reproductions)."""
    forced = forced_probe()
    if forced is not None:
        return forced == "bf16", f"probe forced by {PROBE_ENV}={forced}"
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"CUDA GPU {name} supports bf16"
        return False, f"CUDA GPU {name} has no native bf16"
    if kind != "cpu":
        return False, f"no bf16 probe for device type {kind!r}"
    flags = _cpu_flags()
    if flags is None:
        return False, "CPU feature flags unreadable (/proc/cpuinfo); bf16 may be emulated"
    found = [f for f in _CPU_BF16_FLAGS if f in flags] or (["bf16"] if "bf16" in flags else [])
    if found:
        return True, f"CPU has native bf16 matmuls ({', '.join(found)})"
    return False, "CPU lacks amx_bf16/avx512_bf16: bf16 would be emulated, 3-15x slower than fp32"


def resolve_precision(requested: str, device: str | torch.device | None = None) -> Choice:
    """``auto`` -> bf16 where :func:`native_bf16` says so, else fp32; ``fp32``/``bf16`` are kept as given."""
    if requested == "fp32":
        return Choice("fp32", requested, "requested explicitly")
    if requested == "bf16":
        return Choice("bf16", requested, "requested explicitly")
    if requested != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16 (got {requested!r})")
    ok, why = native_bf16(device)
    return Choice("bf16" if ok else "fp32", requested, why)


def resolve_dtype(requested: str, device: str | torch.device | None = None) -> str:
    """Inference weights: ``auto`` -> ``bfloat16`` where bf16 is native, else ``float32``; others as given."""
    if requested != "auto":
        return requested
    return resolve_precision("auto", device).dtype


def announce(choice: Choice, what: str = "precision") -> None:
    """Print the choice and its reason (one plain line; it is also saved in the run summary)."""
    print(f"{what}: {choice.precision} ({choice.requested}: {choice.reason})", flush=True)
