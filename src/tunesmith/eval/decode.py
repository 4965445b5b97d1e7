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

import inspect
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
        # Seeded per batch: a rerun with the same settings draws the same answers.
        generator = torch.Generator(device=ids.device).manual_seed(settings.seed + number)
        if deep:  # PEFT's generate() drops deep prompts under transformers 5 (see generate.py)
            out = greedy_without_cache(model, ids, settings.max_new_tokens, stops)
            new = [out[row, ids.shape[1] :].tolist() for row in range(len(chunk))]
        elif cache_argument(model):
            new = decode_batch(model, ids, mask, settings, stops, generator)
        else:  # e.g. prompt tuning, whose virtual tokens PEFT's generate() adds
            torch.manual_seed(settings.seed + number)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 pad_token_id=pad, eos_token_id=sorted(stops) or None, **_sampling(settings))
            new = [out[row, ids.shape[1] :].tolist() for row in range(len(chunk))]
        for row, index in enumerate(chunk):
            results[index] = _finish(tokenizer, new[row], stops)
        if progress is not None:
            progress(len(chunk))
    return results


def cache_argument(model) -> str | None:
    """The name under which ``model``'s forward takes a KV cache ("cache" in transformers
    >= 5.2x, "past_key_values" before), or None when :func:`decode_batch` cannot drive it
    (PEFT prompt learning prepends virtual tokens inside ``generate``)."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    if config is not None and getattr(config, "is_prompt_learning", False):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(type(base).forward).parameters
    if "position_ids" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def decode_batch(model, ids: torch.Tensor, mask: torch.Tensor, settings: DecodeSettings, stops: set[int],
                 generator: torch.Generator) -> list[list[int]]:
    """Decode one left-padded batch with the KV cache; a row that reached an end token
    leaves the batch (its cache rows are dropped), so the batch costs what its answers
    cost rather than the longest answer times the batch size -- ``generate`` keeps
    computing finished rows until the last one ends. Greedy answers equal ``generate``'s
    (a test checks); returns each row's new token ids, the end token included.
    """
    key = cache_argument(model)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate derives them from the mask
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.cache if key == "cache" else out.past_key_values
    logits = out.logits[:, -1]
    alive = torch.arange(len(ids))
    tokens: list[list[int]] = [[] for _ in range(len(ids))]
    stop_ids = torch.tensor(sorted(stops), dtype=torch.long, device=ids.device)
    for step in range(settings.max_new_tokens):
        chosen = _next_tokens(logits, settings, generator)
        for row, token in zip(alive.tolist(), chosen.tolist()):
            tokens[row].append(token)
        running = ~torch.isin(chosen, stop_ids)
        if step == settings.max_new_tokens - 1 or not running.any():
            break
        if not running.all():
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, mask, chosen = alive[keep], mask[keep], chosen[keep]
        mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                    use_cache=True, **{key: cache})
        logits = out.logits[:, -1]
    return tokens


def _next_tokens(logits: torch.Tensor, settings: DecodeSettings, generator: torch.Generator) -> torch.Tensor:
    if settings.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1:
        # Nucleus sampling: keep the most likely tokens up to top_p of the mass (at least one).
        ordered, order = probs.sort(-1, descending=True)
        outside = ordered.cumsum(-1) - ordered > settings.top_p
        probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


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
