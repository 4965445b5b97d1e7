"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from tunesmith.errors import ConfigError
from tunesmith.models.structure import find_blocks

SCHEDULES = {
    "cosine": get_cosine_schedule_with_warmup,
    "linear": get_linear_schedule_with_warmup,
}
OPTIMIZERS = ("adamw", "adamw_8bit", "lion", "sgd", "adafactor")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, eps: float = 1e-8, kind: str = "adamw",
                    betas: tuple[float, float] | None = None, momentum: float = 0.9,
                    layer_lr_decay: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``kind`` over trainable parameters (see ``train.optimizer`` in the recipe).

    Biases and norms get no weight decay (standard practice). A parameter carrying a
    ``tunesmith_lr_scale`` attribute (set by a method, e.g. LoRA+ on the B matrices) gets
    its own group at ``lr * scale``, and so does each block under ``layer_lr_decay``;
    schedules then scale every group alike.

    Raises:
        ConfigError: adamw_8bit without bitsandbytes installed.
    """
    scales = layer_scales(model, layer_lr_decay) if layer_lr_decay else {}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim < 2 or "norm" in name.lower())
        scale = getattr(p, "tunesmith_lr_scale", 1.0) * scales.get(id(p), 1.0)
        groups.setdefault((decay, round(scale, 12)), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    param_groups = [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
        for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]
    if kind == "adamw":
        # foreach: one fused kernel launch per group instead of one per tensor.
        return torch.optim.AdamW(param_groups, lr=lr, eps=eps, betas=betas or (0.9, 0.999), foreach=True)
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, foreach=True)
    if kind == "lion":
        from lion_pytorch import Lion

        return Lion(param_groups, lr=lr, betas=betas or (0.9, 0.99))
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        # A fixed learning rate under our schedule, not Adafactor's own relative steps.
        return Adafactor(param_groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    if kind == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("train.optimizer adamw_8bit needs the bitsandbytes package (8-bit optimizer states).",
                              "Install it with: pip install 'tunesmith[qlora]' (or pip install 'bitsandbytes>=0.50').") from None
        # Tensors under 4,096 values keep 32-bit states (bitsandbytes' min_8bit_size): for
        # them quantisation saves little and costs accuracy.
        return bnb.optim.AdamW8bit(param_groups, lr=lr, eps=eps, betas=betas or (0.9, 0.999))
    raise ConfigError(f"Unknown optimizer {kind!r}.", f"Use one of: {', '.join(OPTIMIZERS)}.")


def layer_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """Learning-rate factor per parameter (by id) under layer-wise decay: block i of L gets
    ``decay ** (L - 1 - i)``, embeddings ``decay ** L``; everything else (heads, final
    norms) is absent, i.e. 1."""
    blocks = list(find_blocks(model))
    scales: dict[int, float] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            scales[id(p)] = decay ** (len(blocks) - 1 - i)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            for p in module.parameters():
                scales.setdefault(id(p), decay ** len(blocks))
    return scales


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes the optimizer's state tensors hold (moments, momentum buffers, factored stats)."""
    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))


def build_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int):
    """Linear warmup to the peak rate, then cosine/linear decay to 0 (or constant)."""
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    return SCHEDULES[kind](optimizer, warmup_steps, total_steps)
