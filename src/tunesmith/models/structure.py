"""Where things are inside a transformer: its block stack, task heads and final norms.

Methods (freeze, adapters, BitFit) and the loop (shallow-layer gradient scaling) both
need these facts; they live with the models so neither has to import the other.
"""

from __future__ import annotations

from torch import nn

from tunesmith.errors import ConfigError

# Names of task heads across architectures: BERT-style classifier (+ its pooler, which
# belongs to the classification head), decoder classification `score`, LM head.
HEAD_NAMES = {
    "classification": ("classifier", "score", "pooler"),
    "causal_lm": ("lm_head",),
}
# Final norms sit after the last block; when the top blocks train they must train too.
FINAL_NORM_NAMES = ("norm", "final_layer_norm", "ln_f")


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the longest ModuleList in the model."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"Could not find the transformer layers of {type(model).__name__}.")
    return max(lists, key=len)


def shallow_parameters(model: nn.Module, blocks: int) -> list[nn.Parameter]:
    """Trainable embedding weights and those of the first ``blocks`` blocks: where loss spikes start."""
    params = [p for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
    if blocks:
        for block in list(find_blocks(model))[:blocks]:
            params.extend(block.parameters())
    return [p for p in params if p.requires_grad]
