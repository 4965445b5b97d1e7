"""BitFit: only the bias terms (and, for classification, the new task head) train."""

from __future__ import annotations

from torch import nn

from tunesmith.errors import ConfigError
from tunesmith.models.structure import HEAD_NAMES


def apply_bitfit(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Freeze every weight except biases (+ the head when ``train_head``, default for classification)."""
    train_head = method_cfg.train_head if method_cfg.train_head is not None else task == "classification"
    biases = 0
    for name, p in model.named_parameters():
        is_bias = name.endswith(".bias") and not _in_head(name, task)
        p.requires_grad_(is_bias)
        biases += is_bias
    if not biases:
        raise ConfigError(
            f"BitFit found no bias terms in {type(model).__name__}: this architecture "
            f"({getattr(model.config, 'model_type', '?')}) has none, so there is nothing to train.",
            "Use method.type: lora or ia3 for this model.",
        )
    if train_head:
        for name, module in model.named_modules():
            if name.split(".")[-1] in HEAD_NAMES[task]:
                module.requires_grad_(True)
    return model


def _in_head(name: str, task: str) -> bool:
    return any(part in HEAD_NAMES[task] for part in name.split("."))
