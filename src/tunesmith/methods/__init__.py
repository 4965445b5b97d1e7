"""Fine-tuning methods: a registry of builder functions keyed by ``method.type``.

Each builder takes the method's config section, the model and the task (plus context
such as the planned number of steps), and returns the model ready to train: wrapped by
PEFT, given adapters, or with ``requires_grad`` set. The training loop never needs to
know which method is in use; the few methods that act during training (AdaLoRA's rank
allocator) hand the loop generic :class:`TrainingHooks`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tunesmith.config.methods import METHODS
from tunesmith.methods import lora
from tunesmith.methods.adapters import apply_adapters
from tunesmith.methods.bitfit import apply_bitfit
from tunesmith.methods.freeze import apply_freeze, apply_full
from tunesmith.methods.ia3 import apply_ia3
from tunesmith.methods.prompt import apply_prefix, apply_prompt, apply_ptuning
from tunesmith.train.hooks import TrainingHooks

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
# Every method of the catalog has a builder (tests/unit/test_method_catalog.py checks it).
assert set(BUILDERS) == set(METHODS), "methods/__init__.BUILDERS and config/methods.METHODS disagree"


def apply_method(model: nn.Module, method_cfg, task: str, *, total_steps: int | None = None,
                 new_token_ids: list[int] | None = None, new_token_lr_scale: float = 1.0) -> nn.Module:
    """Prepare ``model`` for training with the configured method (``new_token_ids``: vocabulary
    rows added for this run, which train too, at ``new_token_lr_scale`` times the rate)."""
    return BUILDERS[method_cfg.type](model, method_cfg, task, total_steps=total_steps, new_token_ids=new_token_ids,
                                     new_token_lr_scale=new_token_lr_scale)


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
