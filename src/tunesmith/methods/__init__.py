"""Fine-tuning methods: a registry of builder functions keyed by ``method.type``.

Each builder takes the method's config section, the model and the task (plus context
such as the planned number of steps), and returns the model ready to train: wrapped by
PEFT, given adapters, or with ``requires_grad`` set. The training loop never needs to
know which method is in use; the few methods that act during training (AdaLoRA's rank
allocator) hand the loop generic :class:`TrainingHooks`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tunesmith.methods import lora
from tunesmith.methods.adapters import apply_adapters
from tunesmith.methods.bitfit import apply_bitfit
from tunesmith.methods.freeze import apply_freeze, apply_full
from tunesmith.methods.ia3 import apply_ia3
from tunesmith.methods.prompt import apply_prefix, apply_prompt, apply_ptuning

BUILDERS: dict[str, Callable] = {
    "full": apply_full,
    "freeze": apply_freeze,
    "lora": lora.apply_lora,
    "qlora": lora.apply_qlora,
    "adalora": lora.apply_adalora,
    "prefix": apply_prefix,
    "prompt": apply_prompt,
    "ptuning": apply_ptuning,
    "ia3": apply_ia3,
    "adapter": apply_adapters,
    "bitfit": apply_bitfit,
}
# Methods whose trained weights can be folded into the base weights (one model, no overhead).
MERGEABLE = {"full", "freeze", "bitfit", "lora", "qlora", "adalora", "ia3"}


@dataclass
class TrainingHooks:
    """What a method needs from the loop, without the loop knowing the method.

    ``extra_loss(model)`` is added to each optimizer step's loss (a regulariser);
    ``after_optimizer_step(model, step)`` runs after ``optimizer.step()`` and before the
    gradients are cleared; ``state``/``load_state`` carry the method's own running state
    through checkpoints so resuming stays exact; ``checkpoint_context(model)`` wraps the
    writing of a checkpoint's weights.
    """

    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None
    after_optimizer_step: Callable[[nn.Module, int], None] | None = None
    state: Callable[[nn.Module], dict] | None = None
    load_state: Callable[[nn.Module, dict], None] | None = None
    checkpoint_context: Callable[[nn.Module], AbstractContextManager] | None = None


def apply_method(model: nn.Module, method_cfg, task: str, *, total_steps: int | None = None) -> nn.Module:
    """Prepare ``model`` for training with the configured method."""
    return BUILDERS[method_cfg.type](model, method_cfg, task, total_steps=total_steps)


def training_hooks(method_cfg) -> TrainingHooks:
    """The loop hooks of a method (empty for all but AdaLoRA)."""
    if method_cfg.type == "adalora":
        return TrainingHooks(
            extra_loss=lora.adalora_orthogonality if method_cfg.orth_reg_weight else None,
            after_optimizer_step=lora.adalora_allocate,
            state=lora.adalora_state,
            load_state=lora.load_adalora_state,
            checkpoint_context=lora.full_rank_weights,
        )
    return TrainingHooks()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once.

    4-bit weights are stored two per byte; they count as the parameters they stand for.
    """
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if p.dtype == torch.uint8 and hasattr(p, "quant_state"):
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
