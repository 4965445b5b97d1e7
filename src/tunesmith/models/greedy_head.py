"""Faster fp32 greedy decoding on CPU: the LM head screens the vocabulary in bf16.

A greedy decoding step only needs the argmax of the logits. For a small model the LM head
is a large share of the step: SmolLM2-135M's 49,152 x 576 head took 6.5 ms of a ~75 ms
step at 16 rows in fp32 on 2 cores; screened as below, 2.2-2.5 ms (microbenchmark, 30
calls, 3 rounds). Within :func:`screened_greedy_head` the head computes every logit from
a oneDNN-packed bf16 copy of its weight (AMX where the CPU has it), takes each row's 8
best (the best of the 8 blocks of 64 tokens with the highest maxima: block maxima took
0.28 ms for 16 rows, a vocabulary-wide ``topk`` 0.46 ms), computes those 8 in fp32 and keeps the best.
That is the fp32 argmax whenever it provably beats every other token. Rows where it does
not (a flat distribution) take the whole fp32 head. The head returns the bf16 logits with
the winner set to +inf, so their argmax is the fp32 argmax, up to fp32 summation order:
two tokens within about 1e-6 of each other may swap, as they may between two batch sizes
of the plain kernel.

The bound: rounding ``h`` and a weight row ``w`` to bf16 (unit roundoff u = 2^-8) and
accumulating d products in fp32 moves ``h . w`` by at most
``(2u + u^2 + 2 d 2^-24) |h|_2 |w|_2`` (Cauchy-Schwarz; one fp32 accumulation for ours, one
for the reference), and rounding the output to bf16 by ``u`` of itself (taken twice, as
the output is itself rounded). Tokens in the 8 top blocks are bounded one by one; every
other block by its maximum and its largest ``|w|_2``, so no pass over the vocabulary is
needed beyond the block maxima. The weight norms are computed once.

Sampling needs every logit, so it keeps the plain head; so do heads that are not a plain
``nn.Linear`` without bias (LoRA on the head, accelerate hooks) or carry forward hooks,
and models already decoding in bf16 (:mod:`tunesmith.models.packed_linear` packs their
head).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from tunesmith.models.packed_linear import packing_mode

UNIT_ROUNDOFF = 2.0**-8
# Tokens per row computed in fp32: enough that the rest is nearly always provably lower.
CANDIDATES = 8
BLOCK = 64


def screenable_head(model) -> nn.Linear | None:
    """``model``'s output head when :func:`screened_greedy_head` can screen it, else None:
    a plain fp32 ``nn.Linear`` on a CPU with oneDNN bf16, outside bf16 autocast."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not nn.Linear or head.bias is not None or "forward" in head.__dict__:
        return None
    if head.weight.dtype != torch.float32 or head.weight.shape[0] < CANDIDATES * BLOCK:
        return None
    if head._forward_hooks or head._forward_pre_hooks:  # a hook may change the logits (a bias, a mask)
        return None
    if head.weight.device.type != "cpu" or packing_mode(model) is not None or torch.is_autocast_enabled("cpu"):
        return None
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return None
    return head


@contextmanager
def screened_greedy_head(model, rows: int):
    """Within the block, calls of up to ``rows`` rows to ``model``'s LM head return
    bf16 logits whose argmax is the fp32 argmax (marked +inf; greedy decoding only). Yields whether the head was replaced; restored on exit."""
    head = screenable_head(model) if rows >= 1 else None
    if head is None:
        yield False
        return
    try:
        head.forward = _screened_forward(head, rows)
        yield True
    finally:
        head.__dict__.pop("forward", None)


def _screened_forward(head: nn.Linear, rows: int):
    plain = type(head).forward.__get__(head)
    weight = head.weight.detach()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16), rows)
    norms = weight.norm(dim=1)
    block_norms = _block_maxima(norms[None])[0]
    offsets = torch.arange(BLOCK)  # a block's tokens, relative to its first
    summation = 2 * weight.shape[1] * 2.0**-24  # two fp32 accumulations: ours and the reference's
    factor = 2 * UNIT_ROUNDOFF + UNIT_ROUNDOFF**2 + summation

    def upper(logits: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """The most fp32 logits can be, given bf16 ones and |h| |w| of their tokens."""
        return logits + 2 * UNIT_ROUNDOFF * logits.abs() + factor * spread

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.numel() // x.shape[-1] > rows:
            return plain(x)
        h = x.reshape(-1, x.shape[-1])
        approx = torch.ops.mkldnn._linear_pointwise(h.to(torch.bfloat16), packed, None, "none", [], "")
        # The candidates: the best tokens of the blocks of 64 with the highest maxima. The
        # block maxima also bound every other block below.
        blocks = _block_maxima(approx).float()
        top_blocks = blocks.topk(CANDIDATES, dim=1).indices
        tokens = (top_blocks[:, :, None] * BLOCK + offsets).flatten(1).clamp(max=len(norms) - 1)
        values = approx.gather(1, tokens).float()
        picked = values.topk(CANDIDATES, dim=1).indices
        candidates = tokens.gather(1, picked)
        exact = (weight[candidates] * h[:, None, :]).sum(-1)  # the candidates' fp32 logits
        best, place = exact.max(dim=1)
        winner = candidates.gather(1, place[:, None]).squeeze(1)
        # The best any other token can be: token by token in the top blocks, block by
        # block (the block's maximum and its largest weight norm) elsewhere.
        size = h.norm(dim=1, keepdim=True)
        near = upper(values, size * norms[tokens]).scatter_(1, picked, float("-inf"))
        far = upper(blocks, size * block_norms).scatter_(1, top_blocks, float("-inf"))
        rest = torch.maximum(near.amax(dim=1), far.amax(dim=1))
        lowest = best - summation * size[:, 0] * norms[winner]
        unsure = (lowest <= rest).nonzero().squeeze(1)
        if len(unsure):  # a flat distribution: those rows take the whole fp32 head
            winner[unsure] = plain(h[unsure]).argmax(dim=1)
        approx[torch.arange(len(h)), winner] = float("inf")
        return approx.reshape(*x.shape[:-1], -1)

    return forward


def _block_maxima(values: torch.Tensor) -> torch.Tensor:
    """Each row's maximum over consecutive blocks of ``BLOCK`` columns (the last may be short)."""
    rows, width = values.shape
    whole = width // BLOCK * BLOCK
    maxima = values[:, :whole].view(rows, -1, BLOCK).amax(-1)
    if whole < width:
        maxima = torch.cat([maxima, values[:, whole:].amax(-1, keepdim=True)], dim=1)
    return maxima
