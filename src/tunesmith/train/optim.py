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
    """AdamW over trainable parameters; biases and norms get no weight decay (standard practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # foreach: one fused kernel launch per group instead of one per tensor.
    return torch.optim.AdamW(groups, lr=lr, eps=eps, foreach=True)


def build_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int):
    """Linear warmup to the peak rate, then cosine/linear decay to 0 (or constant)."""
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    return SCHEDULES[kind](optimizer, warmup_steps, total_steps)
