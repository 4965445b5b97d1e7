"""Mixed precision without global state.

accelerate keeps mixed precision in a process-wide singleton that cannot change once
set, which breaks running several recipes in one process (tests, `compare`). Autocast
is all we need from it, so we own it here.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Context manager: autocast to the precision's dtype, or nothing for fp32."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
