"""The roomy KV cache: the same logits as transformers' DynamicCache, without a copy per token."""

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from tunesmith.eval.roomy_cache import ROOM, RoomyLayer, roomy_cache


def _decode(model, cache, prompt: torch.Tensor, steps: int, between=None) -> tuple[list[torch.Tensor], list[int]]:
    """Greedy steps through ``cache``; returns each step's logits and the first layer's key address.
    ``between(step, cache)`` may drop rows from the cache and return the rows kept."""
    out = model(input_ids=prompt, use_cache=True, past_key_values=cache)
    logits, addresses = [out.logits[:, -1]], []
    for step in range(steps):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        kept = between(step, cache) if between is not None else None
        if kept is not None:
            token = token[kept]
        out = model(input_ids=token, use_cache=True, past_key_values=cache)
        logits.append(out.logits[:, -1])
        addresses.append(cache.layers[0].keys.data_ptr())
    return logits, addresses


def test_roomy_cache_gives_dynamic_cache_logits_and_writes_in_place(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    prompt = torch.randint(0, model.config.vocab_size, (3, 5))
    cache = roomy_cache(model)
    assert all(type(layer) is RoomyLayer for layer in cache.layers)
    with torch.no_grad():
        expected, _ = _decode(model, DynamicCache(config=model.config), prompt, ROOM + 4)
        got, addresses = _decode(model, cache, prompt, ROOM + 4)
    for step, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"step {step}")
    # The prompt's buffer has ROOM spare positions: the first ROOM steps write into it, then it grows once.
    assert len(set(addresses[: ROOM - 1])) == 1
    assert len(set(addresses)) == 2
    assert cache.get_seq_length() == 5 + ROOM + 4


def test_rows_that_leave_mid_decode_keep_dynamic_cache_logits(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    prompt = torch.randint(0, model.config.vocab_size, (3, 4))

    def drop_middle_row(step, cache):
        if step == 3:
            kept = torch.tensor([0, 2])
            cache.batch_select_indices(kept)
            return kept
        return None

    with torch.no_grad():
        expected, _ = _decode(model, DynamicCache(config=model.config), prompt, 8, drop_middle_row)
        got, _ = _decode(model, roomy_cache(model), prompt, 8, drop_middle_row)
    assert got[-1].shape[0] == 2
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
