"""Prompt-based methods through PEFT: prefix tuning, prompt tuning, P-tuning (v1 and v2).

All of them keep the base model untouched and learn vectors the model attends to:
- prompt tuning: soft-prompt embeddings prepended to the input (random or text init);
- P-tuning v1: the input prompt is produced by a small prompt encoder (MLP or LSTM);
- prefix tuning: key/value vectors prepended in every layer, optionally reparameterised
  through an MLP (the paper's trick for stable training);
- P-tuning v2: the same deep prompts in every layer, trained directly (no MLP). PEFT
  implements it as prefix tuning without projection, which is what the paper describes.
"""

from __future__ import annotations

import inspect

from peft import (
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptTuningConfig,
    PromptTuningInit,
)
from torch import nn

from tunesmith.errors import ConfigError
from tunesmith.methods.lora import head_modules, peft_task_type, wrap


def accept_past_key_values(model: nn.Module, method: str, task: str) -> None:
    """Let PEFT hand deep prompts to a model that calls its key/value cache ``cache``.

    Transformers 5 renamed the ``past_key_values`` argument to ``cache``; PEFT still passes
    ``past_key_values`` and, for classification, refuses models whose ``forward`` doesn't
    name it. A thin forward that accepts the old name and passes the prompts on as
    ``cache`` makes prefix tuning / P-tuning v2 work on both BERT and decoder models.
    """
    params = inspect.signature(model.forward).parameters
    # PEFT's causal-LM path passes the prompts without checking the signature, and the
    # model still reads the old name there; patching it would break generate().
    if "past_key_values" in params or task == "causal_lm":
        return
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    takes_cache = "cache" in params or (
        backbone is not None and "cache" in inspect.signature(backbone.forward).parameters
    )
    if not takes_cache:
        raise ConfigError(
            f"{method} needs a model that accepts cached keys/values, and {type(model).__name__} "
            f"({getattr(model.config, 'model_type', '?')}) does not.",
            "Use method prompt or ptuning with version: 1 (input-level prompts), or lora.",
        )
    original = model.forward

    def forward(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return original(*args, **kwargs)

    model.forward = forward


def apply_prefix(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Prefix tuning: trainable key/value prefixes in every attention layer."""
    accept_past_key_values(model, "Prefix tuning", task)
    config = PrefixTuningConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=method_cfg.num_virtual_tokens,
        prefix_projection=method_cfg.projection,
        encoder_hidden_size=method_cfg.projection_hidden,
        modules_to_save=head_modules(model, task),
    )
    return wrap(model, config, "Prefix tuning")


def apply_prompt(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Prompt tuning: a soft prompt of ``num_virtual_tokens`` input embeddings."""
    text = method_cfg.init == "text"
    config = PromptTuningConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=method_cfg.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=method_cfg.init_text if text else None,
        # PEFT tokenizes the init text with the base model's own tokenizer.
        tokenizer_name_or_path=getattr(model, "name_or_path", None) if text else None,
        modules_to_save=head_modules(model, task),
    )
    return wrap(model, config, "Prompt tuning")


def apply_ptuning(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """P-tuning v1 (prompt encoder) or v2 (deep prompts in every layer)."""
    if method_cfg.version == 2:
        accept_past_key_values(model, "P-tuning v2", task)
        config = PrefixTuningConfig(
            task_type=peft_task_type(task),
            num_virtual_tokens=method_cfg.num_virtual_tokens,
            prefix_projection=False,
            modules_to_save=head_modules(model, task),
        )
        return wrap(model, config, "P-tuning v2")
    encoder = PromptEncoderReparameterizationType.LSTM if method_cfg.encoder == "lstm" else PromptEncoderReparameterizationType.MLP
    config = PromptEncoderConfig(
        task_type=peft_task_type(task),
        num_virtual_tokens=method_cfg.num_virtual_tokens,
        encoder_reparameterization_type=encoder,
        encoder_hidden_size=method_cfg.encoder_hidden_size,
        modules_to_save=head_modules(model, task),
    )
    return wrap(model, config, "P-tuning")
