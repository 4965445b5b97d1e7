"""oneDNN-packed bf16 linear layers for decoding: autocast's outputs, plain kernels elsewhere, restored after."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.models.packed_linear import packed_linears, packing_mode

BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
pytestmark = pytest.mark.skipif(not BF16, reason="no oneDNN bf16 on this CPU")


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _calls_of_packed_op(monkeypatch) -> list[tuple]:
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda x, *a: calls.append(x.shape) or real(x, *a))
    return calls


def test_under_bf16_autocast_packed_bf16_layers_give_autocast_outputs_and_are_restored(model, monkeypatch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert packing_mode(model) == torch.bfloat16
    calls = _calls_of_packed_op(monkeypatch)
    ids = torch.randint(0, model.config.vocab_size, (6, 1))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(input_ids=ids).logits
        with packed_linears(model, 8) as packed:
            got = model(input_ids=ids).logits
            longer = model(input_ids=torch.randint(0, model.config.vocab_size, (2, 5))).logits  # 10 rows > 8
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert packed == len(linears) and len(calls) == packed  # each layer once, for the 6-row call only
    assert got.dtype == plain.dtype == torch.bfloat16
    assert torch.equal(got, plain)
    assert longer.shape == (2, 5, model.config.vocab_size)
    assert not any("forward" in m.__dict__ for m in linears)  # the plain layers are back


def test_fp32_decoding_keeps_the_plain_kernels(model, monkeypatch):
    calls = _calls_of_packed_op(monkeypatch)
    assert packing_mode(model) is None
    with torch.inference_mode(), packed_linears(model, 4) as packed:
        model(input_ids=torch.randint(0, model.config.vocab_size, (4, 1)))
    assert packed == 0 and calls == []


def test_calls_with_gradients_take_the_plain_kernel(model, monkeypatch):
    calls = _calls_of_packed_op(monkeypatch)
    ids = torch.randint(0, model.config.vocab_size, (4, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(model, 4) as packed:
        model(input_ids=ids).logits.float().sum().backward()
    assert packed > 0 and calls == []
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_packing_is_skipped_when_memory_is_short(model, monkeypatch):
    import tunesmith.models.packed_linear as packing

    monkeypatch.setattr(packing.psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    with torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(model, 4) as packed:
        assert packed == 0
