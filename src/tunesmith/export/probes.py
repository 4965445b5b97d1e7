"""The fixed inputs every export is checked on, and the run's held-out set for re-measuring.

Probes are real texts from the run (its held-out rows, its probe prompts), tokenized as a
padded batch of mixed lengths, so a parity check also exercises the attention mask.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.data.template import render_prompt, with_system_prompt
from tunesmith.rundir import RunDir

FALLBACK_TEXTS = [
    "The film was a delight from start to finish.",
    "A tedious, overlong mess.",
    "Who are you?",
    "Write one sentence about the sea.",
    "什么是机器学习？",
]


def probe_texts(meta: dict, tokenizer, run_dir: Path | None, limit: int = 16) -> list[str]:
    """Up to ``limit`` texts: the run's probe prompts first, then held-out rows, then fixed fallbacks."""
    run = RunDir(run_dir) if run_dir is not None else None
    prompts = run.probe_inputs() if run else []
    rows = run.eval_rows() if run else []
    if meta["task"] == "classification":
        texts = prompts + [r["text"] for r in rows]
    else:
        texts = [_chat_prompt(tokenizer, [{"role": "user", "content": p}], meta) for p in prompts]
        texts += [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows
                  if tokenizer.chat_template]
    texts += FALLBACK_TEXTS
    return texts[:limit]


def _chat_prompt(tokenizer, messages: list[dict], meta: dict) -> str:
    if tokenizer.chat_template is None:
        return messages[-1]["content"]
    return render_prompt(tokenizer, with_system_prompt(messages, meta.get("system_prompt")))


def probe_batch(tokenizer, texts: list[str], task: str, max_length: int) -> dict[str, torch.Tensor]:
    """A right-padded batch (``input_ids``, ``attention_mask``) of ``texts``, tokenized as in training."""
    # Chat texts come from the template, which already wrote BOS/EOS where the model expects them.
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    add_special_tokens=task == "classification")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def max_abs_diff(reference: torch.Tensor, other: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Largest absolute difference, over attended positions only when ``mask`` is given.

    Causal-LM logits at padding positions are never used, and their values depend on
    implementation details (which masked score a kernel fills in), so they are excluded.
    """
    diff = (reference.float() - other.float()).abs()
    if mask is not None and diff.dim() == 3:
        diff = diff[mask.bool()]
    return float(diff.max()) if diff.numel() else 0.0
