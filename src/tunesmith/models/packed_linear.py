"""Faster bf16 decoding on CPU: linear layers multiply by weights packed once for the kernel.

A decoding step multiplies every weight matrix by a few rows (one per answer being
written). Under bf16 autocast the plain path casts each fp32 weight to bf16 and
re-arranges it on every call. On 2 cores a SmolLM2 MLP matrix times 16 rows took
1,221 us that way, and 332 us with a oneDNN-packed bf16 copy (AMX where the CPU has it),
bit-identical at decoding sizes. The 49,152-row LM head went from 36 ms to 4.9 ms.
(Microbenchmark, median of 50 calls.)

:func:`packed_linears` packs a model's linear layers for the duration of a block. Calls
with more rows than packed for (a prefill) keep the plain kernel, so a prompt's encoding
is exactly the unpacked one. Packing costs a bf16 copy of the weights, so it is skipped
when memory is short.

fp32 is left to the plain kernels. MKL's packed fp32 GEMM (``_mkl_linear``) was bit-identical
and once measured 606 -> 263 us for that matrix. Under torch 2.13 the plain kernel is as
fast in isolation, and whole decodes ran 10-20% slower packed (2026-12-04, 16 prompts x
32 tokens: 4.8-4.9 s packed, 4.0-4.4 s plain), so that path was removed.
"""

from __future__ import annotations

from contextlib import contextmanager

import psutil
import torch
from torch import nn

# The packed copy must fit this many times over in the free memory.
MEMORY_HEADROOM = 2.0


def packing_mode(model: nn.Module) -> torch.dtype | None:
    """The dtype :func:`packed_linears` would pack ``model``'s weights in here, or None:
    bf16 with oneDNN under CPU bf16 autocast or for bf16 weights."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    if weight is None or weight.device.type != "cpu":
        return None
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.bfloat16 if weight.dtype == torch.bfloat16 else None


@contextmanager
def packed_linears(model: nn.Module, rows: int):
    """Within the block, ``model``'s linear layers multiply calls of up to ``rows`` rows
    by a packed copy of their weights. Yields the number of layers packed (0 when packing
    does not apply). Inference only: calls with gradients take the plain kernel, the copy
    does not follow weight updates made inside the block, and the layers are restored on
    exit."""
    mode = packing_mode(model) if rows >= 1 else None
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dtype in (torch.float32,
                                                                                               torch.bfloat16)
              and "forward" not in m.__dict__]  # accelerate's hooks own forward
    copy_bytes = sum(m.weight.numel() for m in layers) * 2
    if mode is None or not layers or psutil.virtual_memory().available < MEMORY_HEADROOM * copy_bytes:
        yield 0
        return
    try:
        for layer in layers:
            layer.forward = _onednn_forward(layer, rows)
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _rows_of(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def _onednn_forward(layer: nn.Linear, rows: int):
    plain = type(layer).forward.__get__(layer)
    packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().to(torch.bfloat16), rows)
    bias = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or _rows_of(x) > rows:
            return plain(x)
        # bf16 in, bf16 out, as autocast computes a linear layer.
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, bias, "none", [], "")

    return forward
