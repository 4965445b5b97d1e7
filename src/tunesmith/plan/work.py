"""The work of one training step, counted on fake tensors.

A CPU training step is not all matrix products: dropout's random masks, norms,
activations, softmax and the optimizer's elementwise updates stream activations and
weights through memory at a fraction of matmul speed (on the MiniLM demo, dropout alone
is a fifth of the step). :class:`WorkCounter` sees every aten op of a fake forward,
backward and optimizer step and sorts its work into what runs at different speeds:
- FLOPs of matrix products and attention kernels (torch's own FLOP formulas where it has them);
- random numbers drawn (dropout masks);
- bytes read and written by ops that write a fresh tensor (on a CPU its pages are
  faulted in first: several times slower than re-writing memory in place);
- bytes read and written by in-place ops (the optimizer's foreach updates).
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


def _attention_flops(args, backward: bool) -> int:
    # Attention kernels torch's FLOP table lacks (the CPU flash kernels): QK^T and PV.
    q, k = args[0], args[1]
    b, heads, s_q, d = q.shape
    flops = 4 * b * heads * s_q * k.shape[-2] * d
    return 2 * flops if backward else flops


class WorkCounter(TorchDispatchMode):
    """Counts ``flops``, ``random`` (numbers drawn), ``fresh_bytes`` and ``inplace_bytes``."""

    def __init__(self):
        super().__init__()
        self.flops = self.other_flops = self.random = self.fresh_bytes = self.inplace_bytes = 0
        # Matrix products by shape: (op, operand shapes, dtype) -> calls. Small and oddly
        # shaped products run far below the big-matmul rate, so each shape is timed.
        self.matmuls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = packet.__name__
        if name in MATMULS:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out)
            operands = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            self.matmuls[(name, operands, str(out.dtype).split(".")[-1])] += 1
        elif packet in flop_registry or "attention" in name:
            flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else \
                _attention_flops(args, "backward" in name)
            self.flops += flops
            self.other_flops += flops
        elif name in RANDOM:
            self.random += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        elif func.namespace == "aten" and name not in NOT_TRAFFIC \
                and not any(r.alias_info is not None for r in func._schema.returns):
            moved = sum(t.numel() * t.element_size() for t in tree_flatten((args, kwargs, out))[0]
                        if isinstance(t, torch.Tensor))
            if name.endswith("_"):
                self.inplace_bytes += moved
            else:
                self.fresh_bytes += moved
        return out

    def add(self, other: "WorkCounter") -> "WorkCounter":
        """This counter plus ``other``'s counts."""
        self.flops += other.flops
        self.other_flops += other.other_flops
        self.random += other.random
        self.fresh_bytes += other.fresh_bytes
        self.inplace_bytes += other.inplace_bytes
        self.matmuls.update(other.matmuls)
        return self
