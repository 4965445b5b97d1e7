"""Batched answer generation for evaluation: left padding, the KV cache, one stop rule.

Evaluation answers hundreds of prompts; one ``generate`` call per prompt leaves most of
the machine idle. Here prompts are sorted by length (so a batch pads little) and decoded
as batches with left padding, the attention mask and the model's KV cache. Greedy
answers do not depend on what they were batched with, which a test checks against
one-by-one decoding. Decoding stops at the model's EOS or the chat template's
end-of-turn token; the settings used go into ``metrics.json`` so a number can be
reproduced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from tunesmith.eval.generate import greedy_without_cache, stop_token_ids, uses_deep_prompts

# End-of-turn markers of common chat templates; whichever the tokenizer knows as a single
# token also ends an answer (a base model's EOS is often not the template's turn end).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class DecodeSettings:
    """How answers are decoded. ``temperature`` 0 is greedy; above 0 samples with ``seed``."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16

    def describe(self) -> dict:
        """The settings as written to metrics.json."""
        return dict(asdict(self), strategy="greedy" if self.temperature == 0 else "sampling")


def end_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer: EOS ids plus the template's end-of-turn token."""
    ids = stop_token_ids(model, tokenizer)
    unk = tokenizer.unk_token_id
    for token in END_OF_TURN_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != unk and token in tokenizer.all_special_tokens:
            ids.add(token_id)
    return ids


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[list[int]], settings: DecodeSettings, device="cpu",
                     progress=None) -> list[dict]:
    """Answer each prompt (token ids, already rendered with the chat template).

    Returns per prompt, in the input order, ``{"text", "tokens", "finish"}`` where
    finish is "stop" (an end token came) or "length". ``progress`` is called with the
    number of prompts done after each batch.
    """
    model.eval()
    stops = end_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops, default=0)
    # Longest first: the first batch is the largest, so running out of memory happens at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    deep = uses_deep_prompts(model)
    size = 1 if deep else max(1, settings.batch_size)
    results: list[dict | None] = [None] * len(prompts)
    for number, start in enumerate(range(0, len(order), size)):
        chunk = order[start : start + size]
        ids, mask = left_padded([prompts[i] for i in chunk], pad)
        ids, mask = ids.to(device), mask.to(device)
        if deep:  # PEFT's generate() drops deep prompts under transformers 5 (see generate.py)
            out = greedy_without_cache(model, ids, settings.max_new_tokens, stops)
        else:
            if settings.temperature > 0:
                # Seeded per batch: a rerun with the same settings draws the same answers.
                torch.manual_seed(settings.seed + number)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 pad_token_id=pad, eos_token_id=sorted(stops) or None, **_sampling(settings))
        for row, index in enumerate(chunk):
            results[index] = _finish(tokenizer, out[row, ids.shape[1] :].tolist(), stops)
        if progress is not None:
            progress(len(chunk))
    return results


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token-id rows into a left-padded batch and its attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _sampling(settings: DecodeSettings) -> dict:
    if settings.temperature == 0:
        # Explicit Nones: a model's generation_config may ask for sampling by default.
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}


def _finish(tokenizer, ids: list[int], stops: set[int]) -> dict:
    finish = "length"
    for k, token in enumerate(ids):
        if token in stops:
            ids, finish = ids[:k], "stop"
            break
    return {"text": tokenizer.decode(ids, skip_special_tokens=True).strip(), "tokens": len(ids), "finish": finish}
