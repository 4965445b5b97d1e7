"""Mixed precision without global state.

accelerate keeps mixed precision in a process-wide singleton that cannot change once
set, which breaks running several recipes in one process (tests, `compare`). Autocast
is all we need from it, so we own it here.
"""

from __future__ import annotations

import contextlib
import os

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Context manager: autocast to the precision's dtype, or nothing for fp32."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: nothing is assumed)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support(device_type: str) -> tuple[bool, str]:
    """Whether bf16 autocast runs natively on ``device_type`` ("cpu", "cuda", ...), and why.

    On a CPU only AMX or AVX512-BF16 compute in bf16; elsewhere oneDNN emulates it and the
    run gets slower than fp32 for a small loss of precision, so ``auto`` stays fp32 there.
    ``TUNESMITH_NO_BF16=1`` says no everywhere (exact fp32 whatever the hardware; the
    test suite sets it, so its numbers do not depend on the machine's CPU).
    """
    if os.environ.get("TUNESMITH_NO_BF16", "") not in ("", "0"):
        return False, "TUNESMITH_NO_BF16 is set"
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"the GPU ({torch.cuda.get_device_name()}) computes in bf16"
        return False, "this GPU has no native bf16 (it came with Ampere)"
    if device_type == "cpu":
        flags = cpu_flags()
        if "amx_bf16" in flags:
            return True, "the CPU has AMX-BF16"
        if "avx512_bf16" in flags:
            return True, "the CPU has AVX512-BF16"
        return False, "the CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated, slower than fp32)"
    return False, f"bf16 autocast is not used on {device_type}"


def resolve_precision(setting: str, device_type: str) -> tuple[str, str]:
    """The precision a run uses for ``train.precision: setting`` on ``device_type``, and why."""
    if setting != "auto":
        return setting, "set in the recipe"
    supported, why = bf16_support(device_type)
    return ("bf16" if supported else "fp32"), why


def usable_precision(precision: str | None, device_type: str) -> str:
    """``precision`` (a run's, as recorded) where it runs natively on ``device_type``, else fp32:
    a bf16 run is re-scored in bf16 where that is fast, in exact fp32 elsewhere."""
    if precision == "fp16":
        return "fp16" if device_type == "cuda" else "fp32"
    return "bf16" if precision == "bf16" and bf16_support(device_type)[0] else "fp32"
