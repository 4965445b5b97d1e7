"""MKL-packed linear layers for decoding: same outputs as the plain layers, restored after."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.models.packed_linear import packed_linears, packing_mode

pytestmark = pytest.mark.skipif(packing_mode(torch.nn.Linear(2, 2)) != torch.float32,
                                reason="this torch build has no MKL packed linear")


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _calls_of_packed_op(monkeypatch) -> list[int]:
    calls = []
    real = torch.ops.mkl._mkl_linear

    def counting(x, *args):
        calls.append(x.shape[0])
        return real(x, *args)

    monkeypatch.setattr(torch.ops.mkl, "_mkl_linear", counting)
    return calls


@pytest.mark.parametrize("rows", [4, 3, 2, 1, 9])
def test_packed_layers_give_the_plain_outputs_and_are_restored(model, rows, monkeypatch):
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (rows, 1))
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        calls = _calls_of_packed_op(monkeypatch)
        with packed_linears(model, 4) as packed:
            got = model(input_ids=ids).logits
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert packed == len(linears)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    # 4 rows use the packing, 2 and 3 are padded up to 4; 1 row (under a third of 4) and 9
    # rows (more than packed for, a prefill) take the plain kernel
    assert calls == ([] if rows in (1, 9) else [4] * len(linears))
    assert not any("forward" in m.__dict__ for m in linears)  # the plain layers are back


def test_under_bf16_autocast_packed_bf16_layers_give_autocast_outputs(model, monkeypatch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if packing_mode(model) != torch.bfloat16:
            pytest.skip("no oneDNN bf16 on this CPU")
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda x, *a: calls.append(x.shape) or real(x, *a))
    ids = torch.randint(0, model.config.vocab_size, (6, 1))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(input_ids=ids).logits
        with packed_linears(model, 8) as packed:
            got = model(input_ids=ids).logits
            longer = model(input_ids=torch.randint(0, model.config.vocab_size, (2, 5))).logits  # 10 rows > 8
    assert packed > 0 and len(calls) == packed  # each layer once, for the 6-row call only
    assert got.dtype == plain.dtype == torch.bfloat16
    assert torch.equal(got, plain)
    assert longer.shape == (2, 5, model.config.vocab_size)


def test_calls_with_gradients_take_the_plain_kernel(model, monkeypatch):
    calls = _calls_of_packed_op(monkeypatch)
    ids = torch.randint(0, model.config.vocab_size, (4, 1))
    with packed_linears(model, 4) as packed:
        model(input_ids=ids).logits.sum().backward()
    assert packed > 0 and calls == []
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_packing_is_skipped_when_memory_is_short(model, monkeypatch):
    import tunesmith.models.packed_linear as packing

    monkeypatch.setattr(packing.psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    with packed_linears(model, 4) as packed:
        assert packed == 0
