"""Generation helpers shared by training probes, evaluation and the server.

PEFT's deep-prompt methods (prefix tuning, P-tuning v2) need their own greedy decoder on
transformers 5 (see :func:`greedy_without_cache`); everything else decodes with
``generate``.
"""

from __future__ import annotations

import torch


def stop_token_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer: the model's generation EOS ids and the tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def uses_deep_prompts(model) -> bool:
    """Prefix tuning / P-tuning v2: prompts live in the key/value cache of every layer."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    return config is not None and getattr(config.peft_type, "value", "") == "PREFIX_TUNING"


def greedy_without_cache(model, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: set[int]) -> torch.Tensor:
    """Greedy decoding by full forward passes.

    PEFT's generate() hands the prefix to transformers 5 under the cache argument's old
    name, and the prefix is silently dropped. Each full forward pass goes through PEFT's
    training path, which applies the prefix correctly; quadratic, but probes are short.
    """
    out = input_ids
    for _ in range(max_new_tokens):
        logits = model(input_ids=out, attention_mask=torch.ones_like(out)).logits[:, -1]
        token = logits.argmax(-1, keepdim=True)
        out = torch.cat([out, token], dim=1)
        if int(token) in stop_ids:
            break
    return out
