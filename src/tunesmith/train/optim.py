"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

SCHEDULES = {
    "cosine": get_cosine_schedule_with_warmup,
    "linear": get_linear_schedule_with_warmup,
}


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW over trainable parameters.

    Biases and norms get no weight decay (standard practice). A parameter carrying a
    ``tunesmith_lr_scale`` attribute (set by a method, e.g. LoRA+ on the B matrices) gets
    its own group at ``lr * scale``; schedules then scale every group alike.
    """
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim < 2 or "norm" in name.lower())
        groups.setdefault((decay, getattr(p, "tunesmith_lr_scale", 1.0)), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    param_groups = [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
        for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]
    # foreach: one fused kernel launch per group instead of one per tensor.
    return torch.optim.AdamW(param_groups, lr=lr, eps=eps, foreach=True)


def build_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int):
    """Linear warmup to the peak rate, then cosine/linear decay to 0 (or constant)."""
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    return SCHEDULES[kind](optimizer, warmup_steps, total_steps)
