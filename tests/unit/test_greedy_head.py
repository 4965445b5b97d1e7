"""The bf16-screened LM head for fp32 greedy decoding: the fp32 argmax, even where bf16 cannot tell."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from tunesmith.models.greedy_head import screenable_head, screened_greedy_head

BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
pytestmark = pytest.mark.skipif(not BF16, reason="no oneDNN bf16 on this CPU")


class Head(nn.Module):
    """A model that is only its output head, as the decoder sees it."""

    def __init__(self, vocab: int, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.05)

    def get_output_embeddings(self):
        return self.lm_head


def _whole_fp32_head_rows(monkeypatch) -> list[int]:
    """Rows multiplied by the whole fp32 head (the fallback), call by call."""
    rows, real = [], torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w, b=None: rows.append(len(x)) or real(x, w, b))
    return rows


def test_screened_argmax_equals_the_fp32_argmax_without_the_fp32_head(monkeypatch):
    model = Head(vocab=8000, width=256, seed=0)
    hidden = torch.randn(16, 1, 256) * 3
    with torch.no_grad():
        plain = model.lm_head(hidden)
        fallback = _whole_fp32_head_rows(monkeypatch)
        with screened_greedy_head(model, 16) as screened:
            got = model.lm_head(hidden)
    assert screened and got.shape == plain.shape
    assert torch.equal(got.argmax(-1), plain.argmax(-1))
    assert fallback == []  # every row was decided by its 8 candidates
    assert "forward" not in model.lm_head.__dict__  # the plain head is back


def test_a_near_tie_that_bf16_rounds_away_is_decided_in_fp32():
    model = Head(vocab=4000, width=128, seed=1)
    hidden = torch.randn(4, 128)
    with torch.no_grad():
        # Token 7 is the best; token 9 beats it by 1e-4 through changes far below bf16 resolution.
        weight = model.lm_head.weight
        weight[7] = hidden[0] * 0.5
        weight[9] = weight[7] + 1e-4 * hidden[0] / hidden[0].square().sum()
        assert torch.equal(weight[7].bfloat16(), weight[9].bfloat16())  # bf16 alone cannot tell them apart
        plain = model.lm_head(hidden)
        with screened_greedy_head(model, 4):
            got = model.lm_head(hidden)
    assert int(plain[0].argmax()) == 9
    assert torch.equal(got.argmax(-1), plain.argmax(-1))


def test_a_flat_row_that_8_candidates_cannot_settle_takes_the_whole_fp32_head(monkeypatch):
    model = Head(vocab=4000, width=128, seed=2)
    hidden = torch.randn(3, 128)
    with torch.no_grad():
        # Every row sees 4000 logits within about 1e-3 of each other: bf16 orders them arbitrarily.
        model.lm_head.weight[:] = hidden[0] / hidden[0].square().sum() + 1e-5 * torch.randn(4000, 128)
        plain = model.lm_head(hidden)
        fallback = _whole_fp32_head_rows(monkeypatch)
        with screened_greedy_head(model, 3):
            got = model.lm_head(hidden)
    assert fallback == [3]  # the three rows went to the fp32 head, in one call
    assert torch.equal(got.argmax(-1), plain.argmax(-1))


def test_larger_calls_bf16_models_small_biased_or_hooked_heads_keep_the_plain_head(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert screenable_head(model) is model.lm_head
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with screened_greedy_head(model, 4):
            prefill = model(input_ids=ids).logits  # 10 rows > 4: the plain head
    assert torch.equal(prefill, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert screenable_head(model) is None  # bf16 decoding packs the head instead
    handle = model.lm_head.register_forward_hook(lambda module, inputs, output: output)
    assert screenable_head(model) is None
    handle.remove()
    assert screenable_head(model.to(torch.bfloat16)) is None
    assert screenable_head(Head(vocab=1000, width=8, seed=0)) is not None
    biased = Head(vocab=1000, width=8, seed=0)
    biased.lm_head.bias = nn.Parameter(torch.zeros(1000))
    assert screenable_head(biased) is None
    assert screenable_head(Head(vocab=500, width=8, seed=0)) is None  # fewer than 8 blocks of 64
