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
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from transformers.cache_utils import DynamicLayer

from tunesmith.eval.generate import greedy_without_cache, stop_token_ids, uses_deep_prompts
from tunesmith.eval.roomy_cache import RoomyLayer, roomy_cache
from tunesmith.models.greedy_head import screened_greedy_head
from tunesmith.models.packed_linear import packed_linears

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


# no_grad, not inference_mode: under inference_mode autocast does not keep its bf16 copies
# of the weights between calls, and a bf16 run's evaluation decoded at half speed.
@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[int]], settings: DecodeSettings, device="cpu",
                     progress=None) -> list[dict]:
    """Answer each prompt (token ids, already rendered with the chat template).

    Returns per prompt, in the input order, ``{"text", "tokens", "finish"}`` where
    finish is "stop" (an end token came) or "length". ``progress`` is called with the
    number of prompts finished as they finish.
    """
    model.eval()
    stops = end_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops, default=0)
    # Longest first: the first batch is the largest, so running out of memory happens at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    if cache_argument(model) and not uses_deep_prompts(model):
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        new = decode_continuously(model, [prompts[i] for i in order], settings, stops, pad, generator, device,
                                  progress)
        return [_finish(tokenizer, tokens, stops) for _, tokens in sorted(zip(order, new))]
    return _answers_batch_by_batch(model, tokenizer, prompts, order, settings, stops, pad, device, progress)


def _answers_batch_by_batch(model, tokenizer, prompts, order, settings, stops, pad, device, progress) -> list[dict]:
    """Models :func:`decode_continuously` cannot drive: PEFT prompt learning, whose
    virtual tokens only PEFT's ``generate`` adds, and deep prompts (one at a time)."""
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
            torch.manual_seed(settings.seed + number)  # seeded per batch: a rerun draws the same answers
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 pad_token_id=pad, eos_token_id=sorted(stops) or None, **_sampling(settings))
        for row, index in enumerate(chunk):
            results[index] = _finish(tokenizer, out[row, ids.shape[1] :].tolist(), stops)
        if progress is not None:
            progress(len(chunk))
    return results


def cache_argument(model) -> str | None:
    """The name under which ``model``'s forward takes a KV cache ("cache" in transformers
    >= 5.2x, "past_key_values" before), or None when :func:`decode_continuously` cannot
    drive it (PEFT prompt learning prepends virtual tokens inside ``generate``)."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    if config is not None and getattr(config, "is_prompt_learning", False):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(type(base).forward).parameters
    if "position_ids" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def decode_continuously(model, prompts: list[list[int]], settings: DecodeSettings, stops: set[int], pad: int,
                        generator: torch.Generator, device="cpu", progress=None) -> list[list[int]]:
    """Decode ``prompts`` with continuous batching over one KV cache; returns each
    prompt's new token ids (the end token included), in the order given.

    Up to ``batch_size`` rows decode together. A row that reaches an end token or
    ``max_new_tokens`` leaves at once (its cache rows are dropped), and as soon as a place
    is free the next prompts are prefilled and joined to the running batch, left-padded
    to the same cache width (prefilling one short prompt costs less than a decoding step
    of the whole batch, so waiting for more free places measured slower). The batch so stays full: answers of different
    lengths cost their own length, where ``generate`` runs every row of a batch until its
    longest answer ends. Greedy answers equal one-by-one ``generate`` (a test checks).
    Caches whose layers are not plain ``DynamicLayer`` (sliding windows, ...) are only
    refilled when empty, which is batch-by-batch decoding.
    """
    size = max(1, settings.batch_size)
    # The batch is full (``size`` rows) at nearly every step, the shape the packing is for.
    greedy_head = screened_greedy_head(model, size) if settings.temperature == 0 else nullcontext()
    with packed_linears(model, size), greedy_head:
        return _decode_continuously(model, prompts, size, settings, stops, pad, generator, device, progress)


def _decode_continuously(model, prompts, size, settings, stops, pad, generator, device, progress) -> list[list[int]]:
    key = cache_argument(model)
    queue = list(range(len(prompts)))
    tokens: list[list[int]] = [[] for _ in prompts]
    stop_ids = torch.tensor(sorted(stops), dtype=torch.long, device=device)
    rows = cache = mask = last = None  # prompt index, KV cache, attention mask and pending token per row
    while queue or rows is not None:
        alive = 0 if rows is None else len(rows)
        if queue and (alive == 0 or (_joinable(cache) and size - alive >= 1)):
            admitted, queue = queue[: size - alive], queue[size - alive :]
            ids, new_mask = left_padded([prompts[i] for i in admitted], pad)
            ids, new_mask = ids.to(device), new_mask.to(device)
            positions = (new_mask.cumsum(-1) - 1).clamp(min=0)  # as generate derives them from the mask
            # The running batch's cache grows into spare room; joining prompts' caches are
            # copied into it, so theirs can be plain.
            fresh_cache = {key: roomy_cache(model)} if rows is None else {}
            out = model(input_ids=ids, attention_mask=new_mask, position_ids=positions, use_cache=True,
                        logits_to_keep=1, **fresh_cache)
            chosen = _next_tokens(out.logits[:, -1], settings, generator)
            admitted = torch.tensor(admitted, device=device)
            if rows is None:
                rows, cache, mask, last = admitted, _cache_of(out, key), new_mask, chosen
            else:
                mask = _join(cache, mask, _cache_of(out, key), new_mask)
                rows, last = torch.cat([rows, admitted]), torch.cat([last, chosen])
            fresh = torch.arange(alive, len(rows), device=device)
        else:
            mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
            out = model(input_ids=last[:, None], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                        use_cache=True, **{key: cache})
            last = _next_tokens(out.logits[:, -1], settings, generator)
            fresh = torch.arange(len(rows), device=device)
        # Record the tokens just chosen; rows that ended leave the batch.
        for row, token in zip(rows[fresh].tolist(), last[fresh].tolist()):
            tokens[row].append(token)
        lengths = torch.tensor([len(tokens[r]) for r in rows.tolist()], device=device)
        done = torch.isin(last, stop_ids) | (lengths >= settings.max_new_tokens)
        if done.any():
            if progress is not None:
                progress(int(done.sum()))
            if done.all():
                rows = cache = mask = last = None
                continue
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, last = rows[keep], mask[keep], last[keep]
            mask = _trim(cache, mask)
    return tokens


def _cache_of(out, key: str):
    return out.cache if key == "cache" else out.past_key_values


def _joinable(cache) -> bool:
    """Whether rows can join ``cache`` mid-flight: plain growing layers only."""
    return all(type(layer) in (DynamicLayer, RoomyLayer) for layer in getattr(cache, "layers", [None]))


def _join(cache, mask: torch.Tensor, new_cache, new_mask: torch.Tensor) -> torch.Tensor:
    """Append ``new_cache``'s rows to ``cache`` in place, left-padding the narrower of the
    two to a common width; returns the joined attention mask."""
    width = max(mask.shape[1], new_mask.shape[1])
    for layer, new in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([_pad_left(layer.keys, width, -2), _pad_left(new.keys, width, -2)])
        layer.values = torch.cat([_pad_left(layer.values, width, -2), _pad_left(new.values, width, -2)])
    return torch.cat([_pad_left(mask, width, -1), _pad_left(new_mask, width, -1)])


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _trim(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading cache columns that are padding for every remaining row (left by rows
    that left), so attention stops paying for them; returns the trimmed mask."""
    first = int(mask.any(0).int().argmax())
    if first == 0 or not _joinable(cache):
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
    return mask[:, first:]


def _next_tokens(logits: torch.Tensor, settings: DecodeSettings, generator: torch.Generator) -> torch.Tensor:
    if settings.temperature == 0:
        # max's indices, not argmax: the same first maximum, and 5x faster over a bf16
        # vocabulary on CPU (0.27 against 1.3 ms for 16 rows of 49,152).
        return logits.max(-1).indices
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
