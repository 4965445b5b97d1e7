"""(IA)³ through PEFT: learned scaling vectors on keys, values and feed-forward activations."""

from __future__ import annotations

from peft import IA3Config
from torch import nn

from tunesmith.methods.lora import head_modules, peft_task_type, wrap

# PEFT knows defaults for many architectures; these cover the ones we ship explicitly,
# following the paper (keys, values, and the input of the second feed-forward layer).
DEFAULT_TARGETS = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}


def apply_ia3(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Wrap ``model`` with (IA)³ vectors; classification heads train in full."""
    targets, feedforward = method_cfg.target_modules, method_cfg.feedforward_modules
    if targets is None:
        targets, default_ff = DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), (None, None))
        feedforward = feedforward if feedforward is not None else default_ff
    config = IA3Config(
        task_type=peft_task_type(task),
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=head_modules(model, task),
    )
    return wrap(model, config, "IA3")
