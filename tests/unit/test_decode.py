"""Batched evaluation decoding: same greedy answers as one prompt at a time, stop at end-of-turn."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.eval.decode import DecodeSettings, end_ids, generate_answers, left_padded


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)


def _prompts(tokenizer):
    questions = ["hi", "what is the capital of france and why is it there", "tell me a story", "a b c d e f g h",
                 "one", "why is the sky blue today", "ok"]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False) for q in questions]


def _one_by_one(model, tokenizer, prompts, max_new):
    stops = end_ids(model, tokenizer)
    texts = []
    for p in prompts:
        ids = torch.tensor([p])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stops))
        new = out[0, ids.shape[1]:].tolist()
        cut = next((k for k, t in enumerate(new) if t in stops), len(new))
        texts.append(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())
    return texts


def test_batched_greedy_equals_one_by_one(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    expected = _one_by_one(model, tokenizer, prompts, 12)
    for batch_size in (1, 3, 16):
        got = generate_answers(model, tokenizer, prompts, DecodeSettings(max_new_tokens=12, batch_size=batch_size))
        assert [g["text"] for g in got] == expected
    assert len(set(expected)) > 1  # the prompts really get different answers


def test_end_of_turn_token_stops_and_is_not_in_the_text(tiny):
    model, tokenizer = tiny
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in end_ids(model, tokenizer)
    # Force the end-of-turn token as the second answer token via a bias on the LM head.
    bias = torch.zeros(model.config.vocab_size)
    bias[im_end] = 1e4
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        if calls["n"] >= 2:
            return output + bias
        return output

    handle = model.lm_head.register_forward_hook(hook)
    try:
        (answer,) = generate_answers(model, tokenizer, _prompts(tokenizer)[:1], DecodeSettings(max_new_tokens=10))
    finally:
        handle.remove()
    assert answer["finish"] == "stop" and answer["tokens"] == 1
    assert "<|im_end|>" not in answer["text"]


def test_sampling_is_reproducible_with_a_seed_and_differs_across_seeds(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    run = lambda seed: [a["text"] for a in generate_answers(  # noqa: E731
        model, tokenizer, prompts, DecodeSettings(max_new_tokens=12, temperature=1.5, seed=seed))]
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_left_padding_puts_tokens_on_the_right():
    ids, mask = left_padded([[5, 6, 7], [9]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_rows_that_stop_early_make_room_for_the_next_prompts_without_changing_any_answer(tiny):
    """A token common in the answers is made a stop token: rows end at different steps,
    leave the batch (their cache rows dropped), the next prompts join the running batch,
    and every answer still equals the one decoded without the extra stop, cut there."""
    from tunesmith.eval.decode import decode_continuously

    model, tokenizer = tiny
    prompts, pad = _prompts(tokenizer), tokenizer.pad_token_id
    stops = end_ids(model, tokenizer)
    settings = DecodeSettings(max_new_tokens=12, batch_size=3)
    full = decode_continuously(model, prompts, DecodeSettings(max_new_tokens=12, batch_size=16), stops, pad,
                               torch.Generator())
    counts = {}
    for row in full:
        for t in row[1:]:
            counts[t] = counts.get(t, 0) + 1
    extra = max(counts, key=counts.get)  # the most common answer token becomes an extra stop token
    steps = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: steps.append(kwargs["input_ids"].shape) if kwargs["input_ids"].shape[1] == 1
        else None, with_kwargs=True)
    try:
        cut = decode_continuously(model, prompts, settings, stops | {extra}, pad, torch.Generator())
    finally:
        handle.remove()
    assert len({len(row) for row in cut}) > 1  # rows really stopped at different steps
    for row, whole in zip(cut, full):
        end = next((k for k, t in enumerate(whole) if t == extra), len(whole) - 1)
        assert row == whole[: end + 1]  # the same tokens up to (and with) the stop token
    # Batch by batch, each group of 3 would decode until its longest answer ends; joining
    # the next prompts into the running batch takes fewer decoding steps.
    groups = [cut[k : k + 3] for k in range(0, len(cut), 3)]
    assert len(steps) < sum(max(len(row) for row in group) - 1 for group in groups)
    assert max(shape[0] for shape in steps) == 3  # never more rows than the batch size
