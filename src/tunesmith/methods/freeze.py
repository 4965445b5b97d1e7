"""Full fine-tuning and partial (freeze) fine-tuning."""

from __future__ import annotations

import re

from torch import nn

from tunesmith.errors import ConfigError
from tunesmith.models.structure import FINAL_NORM_NAMES, HEAD_NAMES, find_blocks

def apply_full(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Every parameter trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_freeze(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Train the task head, plus the last ``train_last_n_layers`` blocks and any parameter
    whose name matches one of ``train_patterns`` (regular expressions)."""
    for p in model.parameters():
        p.requires_grad_(False)
    heads = [m for name, m in model.named_modules() if name.split(".")[-1] in HEAD_NAMES[task]]
    if not heads:
        raise ConfigError(
            f"method 'freeze' found no task head in {type(model).__name__}.", "Use method.type: lora or full."
        )
    for head in heads:
        head.requires_grad_(True)
    n = method_cfg.train_last_n_layers
    if n:
        blocks = find_blocks(model)
        if n > len(blocks):
            raise ConfigError(
                f"method.train_last_n_layers={n} but the model has only {len(blocks)} layers.",
                f"Use a value from 1 to {len(blocks)}.",
            )
        for block in list(blocks)[-n:]:
            block.requires_grad_(True)
        for name, module in model.named_modules():
            if name.split(".")[-1] in FINAL_NORM_NAMES and not list(module.children()):
                module.requires_grad_(True)
    for pattern in method_cfg.train_patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"method.train_patterns: '{pattern}' is not a valid regular expression ({exc}).") from None
        matched = [p for name, p in model.named_parameters() if regex.search(name)]
        if not matched:
            raise ConfigError(
                f"method.train_patterns: '{pattern}' matches no parameter of {type(model).__name__}.",
                "Parameter names look like: " + ", ".join(n for n, _ in list(model.named_parameters())[:3]) + ", ...",
            )
        for p in matched:
            p.requires_grad_(True)
    return model
