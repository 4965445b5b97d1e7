"""Fine-tuning methods: a registry of builder functions keyed by ``method.type``.

Each builder takes the method's config section, the model and the task, and returns
the model ready to train (wrapped by PEFT, or with ``requires_grad`` set). The
training loop never needs to know which method is in use.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from tunesmith.methods.freeze import apply_freeze, apply_full
from tunesmith.methods.lora import apply_lora

BUILDERS: dict[str, Callable] = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora}


def apply_method(model: nn.Module, method_cfg, task: str) -> nn.Module:
    """Prepare ``model`` for training with the configured method."""
    return BUILDERS[method_cfg.type](model, method_cfg, task)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
