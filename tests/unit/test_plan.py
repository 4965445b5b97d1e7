"""`tunesmith plan`: the fake-tensor trace against real passes, and the numbers against a hand calculation."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config.schema import RecipeConfig
from tunesmith.plan.trace import NF4_DOUBLE_QUANT_BYTES, model_config, trace_training, training_forward


def recipe(model_dir, task="causal_lm", **method) -> RecipeConfig:
    return RecipeConfig.model_validate({
        "name": "p", "task": task, "model": {"name": str(model_dir)}, "data": {"train": "x.jsonl", "max_length": 24},
        "method": method or {"type": "lora"}, "train": {"batch_size": 3}})


def real_saved_bytes(config, rows: int, length: int, targets: int, checkpoint_every: int | None = None) -> int:
    """Bytes autograd saves in a real CPU forward pass of the same model, method and shape
    (``checkpoint_every``: with transformers' checkpointing of every Nth block, whose saves it keeps elsewhere)."""
    from tunesmith.methods import apply_method
    from tunesmith.models.load import load_model
    from tunesmith.objectives.tasks import padding_free

    torch.manual_seed(0)
    labels = (1 if config.task == "reward" else 2) if config.model_task == "classification" else None
    model, _ = load_model(config.model.name, config.model_task, num_labels=labels)
    model = apply_method(model, config.method, config.model_task, total_steps=100)
    if checkpoint_every:
        model.activation_checkpointing_enable(every_n_layers=checkpoint_every)
    model.train()
    params = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    saved = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in params:
            saved[id(base)] = base
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        training_forward(model, config.model_task, rows, length, targets, padding_free(config))
    return sum(t.numel() * t.element_size() for t in saved.values())


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "lora"}, {"type": "prompt"}, {"type": "ia3"}])
def test_the_trace_counts_exactly_what_a_real_causal_lm_pass_saves(tiny_llama_dir, method):
    config = recipe(tiny_llama_dir, **method)
    trace = trace_training(config, model_config(str(tiny_llama_dir)), 3, 24, 10, count_work=False)
    assert trace.saved_bytes == real_saved_bytes(config, 3, 24, 10)
    assert trace.saved_bytes > 0


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "adapter"}])
def test_the_trace_counts_exactly_what_a_real_classifier_pass_saves(tiny_bert_dir, method):
    # BERT has dropout and padding-aware attention: the fake pass takes the same kernels.
    config = recipe(tiny_bert_dir, task="classification", **method)
    trace = trace_training(config, model_config(str(tiny_bert_dir)), 3, 24, 1, count_work=False)
    assert trace.saved_bytes == real_saved_bytes(config, 3, 24, 1)


def test_the_trace_counts_exactly_what_a_real_reward_model_pass_saves(tiny_llama_dir):
    # A reward model: a sequence classifier with one output (the plan traces it with one label).
    config = recipe(tiny_llama_dir, task="reward")
    trace = trace_training(config, model_config(str(tiny_llama_dir)), 3, 24, 1, 1, count_work=False)
    assert trace.saved_bytes == real_saved_bytes(config, 3, 24, 1)


def test_new_vocabulary_rows_are_planned(tiny_llama_dir):
    # 64 more rows: 64 x hidden more weights, and 64 more logits per planned target.
    from tunesmith.plan.planner import make_plan

    config = recipe(tiny_llama_dir, type="full")
    base = make_plan(config, with_time=False)
    rows = base.params["vocab_rows"] + 64
    grown = make_plan(config, with_time=False, vocab_rows=rows)
    assert grown.params["vocab_rows"] == rows
    assert grown.params["total"] - base.params["total"] == 64 * model_config(str(tiny_llama_dir)).hidden_size
    assert grown.total_bytes > base.total_bytes


def test_plan_numbers_equal_a_hand_calculation(tiny_llama_dir):
    from tunesmith.plan.memory import estimate_memory

    hf = model_config(str(tiny_llama_dir))
    h, f, layers, vocab = hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers, hf.vocab_size
    kv = h // hf.num_attention_heads * hf.num_key_value_heads
    # Tied embeddings: the LM head adds no parameters. Per layer: q, o (h x h), k, v (h x kv),
    # gate, up, down (h x f each), two RMSNorm weights; one final norm.
    base = vocab * h + layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
    # LoRA r=8 on q, k, v, o, gate, up, down: r x (in + out) per adapted matrix.
    r = 8
    lora = layers * r * ((h + h) * 2 + (h + kv) * 2 + (h + f) * 3)

    trace = trace_training(recipe(tiny_llama_dir, type="lora", r=r), hf, 3, 24, 23, count_work=False)
    assert (trace.total_params, trace.trainable_params) == (base + lora, lora)
    assert trace.weight_bytes == 4 * (base + lora)
    assert trace.trainable_bytes == 4 * lora
    assert trace.logits_bytes == 4 * 3 * 23 * vocab

    memory = estimate_memory(trace, recipe(tiny_llama_dir, type="lora", r=r), baseline_bytes=1000)
    parts = memory.components
    assert parts["optimizer"] == 2 * 4 * lora  # AdamW: two fp32 moments per trained parameter
    assert parts["loss_gradient"] == 2 * trace.logits_bytes
    assert memory.total_bytes == sum(parts.values())

    # QLoRA: the frozen linear weights in 4-bit NF4 with double quantisation, the rest as they are.
    qlora = trace_training(recipe(tiny_llama_dir, type="qlora", r=r), hf, 3, 24, 23, count_work=False)
    linear = layers * (2 * h * h + 2 * h * kv + 3 * h * f)
    assert qlora.weight_bytes == 4 * (base - linear + lora) + sum(
        int(n * NF4_DOUBLE_QUANT_BYTES) for n in [h * h, h * kv, h * kv, h * h, h * f, h * f, h * f] * layers)


def test_gradient_checkpointing_keeps_block_inputs_and_one_block(tiny_llama_dir):
    from tunesmith.plan.memory import activation_bytes

    trace = trace_training(recipe(tiny_llama_dir, type="full"), model_config(str(tiny_llama_dir)), 3, 24, 23,
                           count_work=False)
    outside = trace.saved_bytes - trace.blocks * trace.block_saved_bytes
    assert trace.block_input_bytes == 3 * 24 * 32 * 4  # rows x length x hidden fp32
    assert activation_bytes(trace, 1) == outside + trace.blocks * trace.block_input_bytes + trace.block_saved_bytes
    assert activation_bytes(trace, 1) < activation_bytes(trace, None)


def test_checkpointing_every_second_block_keeps_the_others_activations(tiny_llama_dir):
    """transformers' every_n_layers=2 on two blocks checkpoints the first: a real forward
    then saves the first block's input (torch's checkpoint keeps it) and everything else,
    which is the plan's figure for that setting. The first block is rebuilt after the
    second's activations are freed, so the plan adds nothing for the rebuild."""
    from tunesmith.plan.memory import activation_bytes

    config = recipe(tiny_llama_dir, type="full")
    hf = model_config(str(tiny_llama_dir))
    trace = trace_training(config, hf, 3, 24, 23, count_work=False)
    assert trace.blocks == 2
    block, block_input = trace.block_saved_bytes, trace.block_input_bytes
    every_second = real_saved_bytes(config, 3, 24, 23, checkpoint_every=2)
    assert every_second == trace.saved_bytes - block + block_input
    assert activation_bytes(trace, 2) == every_second
    # Both blocks checkpointed: the second block's saves become its input too, and the rotary
    # cos/sin both blocks saved are held by the checkpoints' closures instead (72 tokens x head dim).
    rotary = 2 * 3 * 24 * (hf.hidden_size // hf.num_attention_heads) * 4
    assert real_saved_bytes(config, 3, 24, 23, checkpoint_every=1) == every_second - block + block_input - rotary


def test_the_work_count_has_the_matmul_flops_of_a_training_step(tiny_llama_dir):
    """Forward: 2 FLOPs per weight per token through every linear layer (the LM head only at the
    kept positions) plus attention; backward of a fully trained model: twice that."""
    hf = model_config(str(tiny_llama_dir))
    trace = trace_training(recipe(tiny_llama_dir, type="full"), hf, 3, 24, 23)
    h, f, layers, vocab = hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers, hf.vocab_size
    kv = h // hf.num_attention_heads * hf.num_key_value_heads
    tokens = 3 * 24
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * f)
    # QK^T and PV: a padding-free micro-batch is one row of 72 tokens, and the CPU kernel
    # multiplies its whole square (the block mask only hides scores).
    attention = layers * 4 * tokens * tokens * h
    forward = 2 * body * tokens + 2 * h * vocab * 3 * 23 + attention
    assert trace.forward_work.flops == forward
    # What gradient checkpointing runs again: the blocks, not the LM head.
    assert trace.blocks * trace.block_forward_work.flops == forward - 2 * h * vocab * 3 * 23
    assert trace.backward_work.flops == pytest.approx(2 * forward, rel=0.02)
    assert trace.optimizer_work.inplace_bytes > 4 * trace.trainable_params * 6  # moments, params, grads updated
