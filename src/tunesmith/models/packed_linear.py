"""Faster decoding on CPU: linear layers multiply by weights packed once for the kernel.

A decoding step multiplies every weight matrix by a few rows (one per answer being
written). At that shape the plain kernels spend their time re-arranging the weight on
every call, and under bf16 autocast also casting it: on 2 cores, a SmolLM2 MLP matrix
times 16 rows took (microbenchmark, median of 50 calls)

- fp32: 606 us plain, 263 us with MKL's packed GEMM (``cblas_sgemm_pack``, what
  torch.compile's CPU "freezing" uses), bit-identical;
- bf16 autocast: 1,221 us, 332 us with a oneDNN-packed bf16 copy (AMX where the CPU has
  it), bit-identical at decoding sizes; the 49,152-row LM head 36 ms -> 4.9 ms.

:func:`packed_linears` packs a model's linear layers for the duration of a block. MKL's
fp32 packing is tied to one row count: calls with a third of it or more are padded up
with zero rows (the rows are independent, and the packed kernel for 16 rows beat the
plain one from about 6 rows: 239 us at 5, 340 us at 8); oneDNN's bf16 packing takes any
count. Calls with more rows than packed for (a prefill) keep the plain kernel, so a
prompt's encoding is exactly the unpacked one. Packing costs a copy of the weights, so
it is skipped when memory is short.
"""

from __future__ import annotations

from contextlib import contextmanager

import psutil
import torch
from torch import nn

# Smallest share of the packed row count that the fp32 kernel pads up (see above).
PAD_FROM = 1 / 3
# The packed copy must fit this many times over in the free memory.
MEMORY_HEADROOM = 2.0


def packing_mode(model: nn.Module) -> torch.dtype | None:
    """The dtype :func:`packed_linears` would pack ``model``'s weights in here, or None:
    fp32 with MKL when nothing autocasts, bf16 with oneDNN under CPU bf16 autocast or for
    bf16 weights."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    if weight is None or weight.device.type != "cpu":
        return None
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 and bf16 else None
    if weight.dtype == torch.bfloat16:
        return torch.bfloat16 if bf16 else None
    if weight.dtype == torch.float32 and torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
        return torch.float32
    return None


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
    copy_bytes = sum(m.weight.numel() for m in layers) * (4 if mode == torch.float32 else 2)
    if mode is None or not layers or psutil.virtual_memory().available < MEMORY_HEADROOM * copy_bytes:
        yield 0
        return
    try:
        for layer in layers:
            layer.forward = (_mkl_forward if mode == torch.float32 else _onednn_forward)(layer, rows)
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _rows_of(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def _mkl_forward(layer: nn.Linear, rows: int):
    plain = type(layer).forward.__get__(layer)
    weight = layer.weight.detach()
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)

    def forward(x: torch.Tensor) -> torch.Tensor:
        count = _rows_of(x)
        if x.dtype != torch.float32 or torch.is_grad_enabled() or not rows * PAD_FROM <= count <= rows:
            return plain(x)
        flat = x.reshape(count, x.shape[-1])
        if count < rows:
            flat = torch.cat([flat, flat.new_zeros(rows - count, flat.shape[1])])
        bias = None if layer.bias is None else layer.bias.detach()
        out = torch.ops.mkl._mkl_linear(flat, packed, weight, bias, rows)
        return out[:count].reshape(*x.shape[:-1], out.shape[-1])

    return forward


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
