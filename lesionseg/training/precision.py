"""Which arithmetic a run uses: bf16 autocast on CPUs with native bf16, fp16 autocast on CUDA, fp32 otherwise.

``train.amp`` asks for mixed precision; this module decides whether the device can give it. On a CPU without
native bf16 instructions (AVX-512 BF16 or AMX) PyTorch emulates bf16 and a step is slower than in fp32, so the
CPU's capability is detected, never assumed. PyTorch has no single "native bf16" query for CPUs (its
``get_cpu_capability()`` names the vector width, not bf16), hence the two checks below.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

BF16 = "bf16"
FP16 = "fp16"
FP32 = "fp32"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the text ``cpuinfo``); empty where there is none
    (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None, capability: str | None = None) -> bool:
    """True when the CPU computes bf16 in hardware: an AVX-512 build of PyTorch (``capability``, by default
    ``torch.backends.cpu.get_cpu_capability()``) on a CPU whose ``flags`` hold avx512_bf16 or amx_bf16."""
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    return capability.upper().startswith("AVX512") and any(f in flags for f in NATIVE_BF16_FLAGS)


@functools.lru_cache(maxsize=None)
def _native_bf16_here() -> bool:
    return cpu_has_native_bf16()


def resolve_precision(device: torch.device | str, amp: bool) -> str:
    """``bf16`` (CPU with native bf16), ``fp16`` (CUDA) or ``fp32`` for ``device`` when ``amp`` asks for mixed
    precision; ``fp32`` when it does not."""
    kind = torch.device(device).type
    if not amp:
        return FP32
    if kind == "cuda":
        return FP16
    if kind == "cpu" and _native_bf16_here():
        return BF16
    return FP32


def autocast_context(device: torch.device | str, amp: bool):
    """The autocast context of :func:`resolve_precision` (a null context for fp32)."""
    kind = torch.device(device).type
    precision = resolve_precision(device, amp)
    if precision == FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16 if precision == BF16 else torch.float16)
