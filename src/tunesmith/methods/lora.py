"""LoRA through PEFT, with per-architecture default target modules."""

from __future__ import annotations

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from tunesmith.errors import ConfigError

# Attention projections (and MLP for decoders, where adapting them is known to pay off)
# for the model types we ship or commonly meet. Unknown types fall back to "all-linear".
DEFAULT_TARGETS = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
CLASSIFICATION_HEADS = ("classifier", "score", "pooler")


def default_targets(model: nn.Module) -> list[str] | str:
    """Target module names for ``model``'s architecture (``"all-linear"`` when unknown)."""
    return DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")


def apply_lora(model: nn.Module, method_cfg, task: str) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; classification heads train in full (modules_to_save)."""
    targets = method_cfg.target_modules or default_targets(model)
    heads = None
    if task == "classification":
        present = {name.split(".")[-1] for name, _ in model.named_modules()}
        heads = [h for h in CLASSIFICATION_HEADS if h in present]
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        r=method_cfg.r,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=targets,
        modules_to_save=heads,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(
            f"LoRA could not be applied: {exc}",
            f"Check method.target_modules (default for this model: {default_targets(model)}).",
        ) from None
