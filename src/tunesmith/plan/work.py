"""The work of one training step, counted on fake tensors.

A CPU training step is not all matrix products: dropout's random masks, norms,
activations, softmax and the optimizer's elementwise updates stream activations and
weights through memory at a fraction of matmul speed (on the MiniLM demo, dropout alone
is a fifth of the step). :class:`WorkCounter` sees every aten op of a fake forward,
backward and optimizer step and sorts its work into what runs at different speeds:
- FLOPs of matrix products and attention kernels (torch's own FLOP formulas where it has them),
  and each such call's exact arguments -- shapes, strides (the backward pass reads
  transposed operands) and dtypes -- so that a local device can time them call for call
  (``plan/device.kernel_seconds``): the CPU's bf16 flash-attention backward runs at a tenth
  of the matmul rate, and a transposed operand can cost half again;
- random numbers drawn (dropout masks);
- bytes read and written by ops that write a fresh tensor;
- bytes read and written by in-place ops (the optimizer's foreach updates);
- bytes of fresh outputs too large for the heap (``heap_limit``, glibc's mmap threshold):
  each such output is mapped anew and its pages faulted in, several times slower than
  writing memory the heap already holds.
Views move nothing and count nothing.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

# Ops that move no data in a real step: views in all but name, and the optimizer state's
# creation (the first step only).
NOT_TRAFFIC = {"_unsafe_view", "zeros_like", "empty_like", "empty", "empty_strided", "lift_fresh"}
MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
RANDOM = {"bernoulli", "bernoulli_", "normal_", "uniform_", "native_dropout"}


def kernel_key(func, args, kwargs) -> tuple:
    """A call as (op, arguments, keyword arguments), each tensor as ("tensor", shape, stride,
    dtype): everything needed to run the same kernel again on random data."""
    def spec(a):
        if isinstance(a, torch.Tensor):
            return ("tensor", tuple(a.shape), tuple(a.stride()), str(a.dtype).split(".")[-1])
        if isinstance(a, (list, tuple)):
            return tuple(spec(x) for x in a)
        return a if a is None or isinstance(a, (bool, int, float, str)) else str(a)
    return str(func), tuple(spec(a) for a in args), tuple(sorted((k, spec(v)) for k, v in kwargs.items()))


def _attention_flops(args, backward: bool) -> int:
    # Attention kernels torch's FLOP table lacks (the CPU flash kernels): QK^T and PV.
    q, k = args[0], args[1]
    b, heads, s_q, d = q.shape
    flops = 4 * b * heads * s_q * k.shape[-2] * d
    return 2 * flops if backward else flops


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class WorkCounter(TorchDispatchMode):
    """Counts ``flops``, ``random`` (numbers drawn), ``fresh_bytes``, ``inplace_bytes`` and
    ``faulted_bytes``, and keeps the matrix-product and attention calls in ``kernels``."""

    def __init__(self, heap_limit: int = 32 * 2**20):
        super().__init__()
        self.heap_limit = heap_limit
        self.flops = self.other_flops = self.random = self.fresh_bytes = self.inplace_bytes = self.faulted_bytes = 0
        # Matrix-product and attention calls by :func:`kernel_key` -> count. Small, oddly
        # shaped or transposed products and the attention kernels run far from the big-matmul
        # rate, so each distinct call is timed; ``other_flops`` are the FLOPs of the rest.
        self.kernels: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = packet.__name__
        if name in MATMULS or "attention" in name:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else \
                _attention_flops(args, "backward" in name)
            self.kernels[kernel_key(func, args, kwargs)] += 1
        elif packet in flop_registry:
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
            self.flops += flops
            self.other_flops += flops
        elif name in RANDOM:
            self.random += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        elif func.namespace == "aten" and name not in NOT_TRAFFIC \
                and not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            moved = sum(_nbytes(t) for t in tree_flatten((args, kwargs, out))[0])
            if name.endswith("_"):
                # A foreach op updates its first list in place and returns nothing: count the write.
                written = sum(_nbytes(t) for t in tree_flatten(args[0])[0]) if out is None and args else 0
                self.inplace_bytes += moved + written
            else:
                self.fresh_bytes += moved
                # A foreach op's outputs are all alive at once: together they leave the heap.
                written = sum(_nbytes(t) for t in tree_flatten(out)[0])
                if written >= self.heap_limit:
                    self.faulted_bytes += written
        return out

    def add(self, other: "WorkCounter") -> "WorkCounter":
        """This counter plus ``other``'s counts."""
        self.flops += other.flops
        self.other_flops += other.other_flops
        self.random += other.random
        self.fresh_bytes += other.fresh_bytes
        self.inplace_bytes += other.inplace_bytes
        self.faulted_bytes += other.faulted_bytes
        self.kernels.update(other.kernels)
        return self
