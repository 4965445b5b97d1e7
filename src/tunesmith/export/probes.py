"""The fixed inputs every export is checked on, and the run's held-out set for re-measuring.

Probes are real texts from the run (its held-out rows, its probe prompts), tokenized as a
padded batch of mixed lengths, so a parity check also exercises the attention mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunesmith.data.template import render_prompt, with_system_prompt
from tunesmith.errors import ConfigError
from tunesmith.jsonl import read_jsonl

FALLBACK_TEXTS = [
    "The film was a delight from start to finish.",
    "A tedious, overlong mess.",
    "Who are you?",
    "Write one sentence about the sea.",
    "什么是机器学习？",
]


def resolve_final_dir(path: str | Path) -> tuple[Path, Path | None]:
    """Accept a run directory or its ``final/`` folder; return ``(final_dir, run_dir or None)``.

    Raises:
        ConfigError: neither the folder nor its ``final/`` holds a Tunesmith model.
    """
    path = Path(path)
    if (path / "final" / "tunesmith.json").is_file():
        return path / "final", path
    if (path / "tunesmith.json").is_file():
        run_dir = path.parent if (path.parent / "summary.json").is_file() else None
        return path, run_dir
    raise ConfigError(
        f"{path} is neither a run directory with final/tunesmith.json nor a final/ folder.",
        "Point to the folder 'tunesmith train' wrote (runs/<name>), or to its final/ subfolder.",
    )


def eval_rows(run_dir: Path | None) -> list[dict]:
    """The run's held-out rows (``eval_set.jsonl``), or [] when the run has none."""
    return read_jsonl(run_dir / "eval_set.jsonl") if run_dir is not None else []


def probe_texts(meta: dict, tokenizer, run_dir: Path | None, limit: int = 16) -> list[str]:
    """Up to ``limit`` texts: the run's probe prompts first, then held-out rows, then fixed fallbacks."""
    prompts: list[str] = []
    if run_dir is not None and (run_dir / "probes.json").is_file():
        prompts = [p["input"] for p in json.loads((run_dir / "probes.json").read_text(encoding="utf-8"))]
    rows = eval_rows(run_dir)
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
