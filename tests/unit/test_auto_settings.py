"""train.precision: auto, train.gradient_checkpointing (true and auto) and data.history."""

from __future__ import annotations

import json

import pytest
import torch
from tunesmith.errors import ConfigError
from transformers import AutoModelForCausalLM, AutoTokenizer

import tunesmith.train.precision as precision_module
from tunesmith.config.load import load_recipe
from tunesmith.data.history import shorten_history, split_exchanges
from tunesmith.eval.stage import run_eval
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.plan.planner import TIGHT_SHARE, make_plan
from tunesmith.rundir import read_model_meta
from tunesmith.runner import run_recipe
from tunesmith.testing import write_chat_recipe, write_cls_recipe
from tunesmith.train.precision import resolve_precision, usable_precision


@pytest.mark.parametrize("flags, expected, reason", [
    ({"avx512f", "amx_bf16", "amx_tile"}, "bf16", "the CPU has AMX-BF16"),
    ({"avx512f", "avx512_bf16"}, "bf16", "the CPU has AVX512-BF16"),
    ({"avx512f", "avx2"}, "fp32", "neither AMX nor AVX512-BF16"),
    (set(), "fp32", "neither AMX nor AVX512-BF16"),
])
def test_auto_picks_bf16_only_where_the_cpu_computes_in_it(monkeypatch, flags, expected, reason):
    monkeypatch.delenv("TUNESMITH_NO_BF16")
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: flags)
    used, why = resolve_precision("auto", "cpu")
    assert used == expected
    assert reason in why
    assert resolve_precision("fp32", "cpu") == ("fp32", "set in the recipe")  # an explicit choice stands
    # Re-scoring a bf16 run: in bf16 where native, in exact fp32 elsewhere.
    assert usable_precision("bf16", "cpu") == expected
    assert usable_precision(None, "cpu") == "fp32"
    assert usable_precision("fp16", "cpu") == "fp32"  # fp16 autocast only on a GPU
    monkeypatch.setenv("TUNESMITH_NO_BF16", "1")  # the switch that keeps any machine in fp32
    assert resolve_precision("auto", "cpu") == ("fp32", "TUNESMITH_NO_BF16 is set")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch, native, expected):
    monkeypatch.delenv("TUNESMITH_NO_BF16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    assert resolve_precision("auto", "cuda")[0] == expected


def test_a_bf16_run_records_its_precision_and_eval_rescores_in_it(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.delenv("TUNESMITH_NO_BF16")
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: {"amx_bf16"})
    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    config = load_recipe(recipe, ["train.precision=auto", "train.epochs=2"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    run = tmp_path / "runs" / "tiny-cls"
    assert summary["precision"] == {"setting": "auto", "used": "bf16", "why": "the CPU has AMX-BF16"}
    assert read_model_meta(run / "final")["precision"] == "bf16"
    result = run_eval(str(run), out=tmp_path / "eval", against=None, resamples=50, show_progress=False,
                      log=lambda *_: None)
    assert result["precision"] == "bf16"
    # The same held-out rows scored in the run's precision give the run's own numbers.
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(summary["eval_after"]["accuracy"], abs=1e-9)
    # ... probability for probability (the run's predictions.jsonl holds its own).
    own = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(own) == len(again) > 0
    for a, b in zip(own, again):
        assert a["probs"] == pytest.approx(b["probs"], abs=2e-6)  # eval rounds to 6 digits


@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_llama_dir, every_n_layers):
    from peft import LoraConfig, get_peft_model

    objective = CausalLMObjective(AutoTokenizer.from_pretrained(tiny_llama_dir), 64)
    batch = objective.collate(objective.encode(_long_chats(4, turns=2)))

    def loss_and_grads(checkpointing: bool):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        if checkpointing:
            model.get_base_model().activation_checkpointing_enable(every_n_layers=every_n_layers)
            layers = model.get_base_model().model.layers
            assert [layer.gradient_checkpointing for layer in layers] == [True, every_n_layers == 1]
        model.train()
        loss = objective.loss_sum(model, batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads(False)
    loss_ckpt, grads_ckpt = loss_and_grads(True)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys() and len(grads) == 8  # A and B of q and v in 2 layers
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_ckpt[name], rtol=1e-5, atol=1e-7), name
        assert grad.abs().sum() > 0


def test_checkpointing_auto_turns_on_only_when_the_plan_is_tight(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    off = load_recipe(recipe, ["train.gradient_checkpointing=false"])
    without = make_plan(off, with_time=False)
    auto = load_recipe(recipe, ["train.gradient_checkpointing=auto"])
    roomy = make_plan(auto, with_time=False, budget_bytes=int(without.total_bytes / (TIGHT_SHARE - 0.05)))
    assert roomy.settings["gradient_checkpointing"] is False and roomy.total_bytes == without.total_bytes
    tight = make_plan(auto, with_time=False, budget_bytes=without.total_bytes)
    assert tight.settings["gradient_checkpointing"] is True
    assert tight.total_bytes < without.total_bytes
    assert any("gradient checkpointing auto: on" in note for note in tight.notes)


def test_checkpointing_auto_recomputes_the_fewest_blocks_that_fit(tmp_path, tiny_llama_dir):
    """On eight blocks whose activations dominate: auto takes every 4th block when that
    plan fits in TIGHT_SHARE of the budget, every 2nd or every block when only those do."""
    from dataclasses import replace

    from tunesmith.config.train_section import with_train
    from tunesmith.plan.device import Device
    from tunesmith.plan.memory import estimate_memory
    from tunesmith.plan.planner import _memory_with_checkpointing
    from tunesmith.plan.trace import model_config, trace_training

    config = load_recipe(write_chat_recipe(tmp_path, tiny_llama_dir), ["train.gradient_checkpointing=auto"])
    small = trace_training(config, model_config(str(tiny_llama_dir)), 2, 16, 15, count_work=False)
    block = 2**30
    trace = replace(small, blocks=8, block_saved_bytes=block, block_input_bytes=block // 64,
                    saved_bytes=8 * block + 2**20)
    planned = {stride: estimate_memory(trace, with_train(config, gradient_checkpointing=True,
                                                         gradient_checkpointing_every_n_layers=stride), 0,
                                       cpu=False).total_bytes for stride in (4, 2, 1)}
    assert planned[4] > planned[2] > planned[1]
    for stride in (4, 2, 1):
        device = Device("gpu", "cuda", int(planned[stride] / TIGHT_SHARE) + 1, None)
        notes = []
        chosen, memory = _memory_with_checkpointing(trace, config, device, notes)
        assert chosen.train.gradient_checkpointing is True
        assert chosen.train.gradient_checkpointing_every_n_layers == stride
        assert memory.total_bytes == planned[stride]
        assert "gradient checkpointing auto: on, every" in notes[0]
    roomy = Device("gpu", "cuda", 20 * block, None)
    chosen, _ = _memory_with_checkpointing(trace, config, roomy, [])
    assert chosen.train.gradient_checkpointing is False


def test_checkpointing_auto_is_used_by_the_run(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    config = load_recipe(recipe, ["train.gradient_checkpointing=auto", "train.max_steps=2"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    assert summary["train"]["gradient_checkpointing"] is False  # a tiny model is far from any budget
    with pytest.raises(ConfigError, match="true, false or 'auto'"):
        load_recipe(recipe, ["train.gradient_checkpointing=sometimes"])


def _long_chats(n: int, turns: int) -> list[dict]:
    chats = []
    for i in range(n):
        messages = [{"role": "system", "content": "you are quill."}]
        for t in range(turns):
            messages += [{"role": "user", "content": f"question {t} of chat {i}: " + "tell me more " * 6},
                         {"role": "assistant", "content": f"answer {t}: " + "here is more " * 6}]
        chats.append({"messages": messages})
    return chats


def test_split_exchanges_keeps_tool_turns_with_their_question():
    chat = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "tool", "content": "t"},
            {"role": "assistant", "content": "a1b"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"}]
    system, exchanges = split_exchanges(chat)
    assert [m["content"] for m in system] == ["s"]
    assert [[m["content"] for m in e] for e in exchanges] == [["hi", "u1", "a1", "t", "a1b"], ["u2", "a2"]]


def test_drop_oldest_keeps_the_trained_answer_whole(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    chat = _long_chats(1, turns=5)
    full = CausalLMObjective(tokenizer, 4096).encode(chat)[0]
    limit = len(full["input_ids"]) * 3 // 5  # room for about three of the five exchanges
    truncated = CausalLMObjective(tokenizer, limit).encode(chat)[0]
    kept = CausalLMObjective(tokenizer, limit, history="drop_oldest")
    shortened = kept.encode(chat)[0]
    last_answer = tokenizer("answer 4: " + "here is more " * 6, add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(shortened["input_ids"])
    # Truncation cuts the last answer away; dropping old exchanges keeps it, trained, and the system prompt.
    assert "answer 4" not in tokenizer.decode(truncated["input_ids"])
    assert "you are quill." in text and "answer 4" in text and "question 4 of chat 0" in text
    trained = [t for t in shortened["labels"] if t != -100]
    assert trained[-len(last_answer) - 1:-1] == last_answer or trained[-len(last_answer):] == last_answer
    # Oldest first: the first exchanges went, the later ones stayed, and it fits.
    assert "question 0 of" not in text and "question 1 of" not in text
    assert len(shortened["input_ids"]) <= limit
    dropped = 5 - sum(f"question {t} of" in text for t in range(5))
    assert kept.history_report == {"policy": "drop_oldest", "chats_shortened": 1, "turns_dropped": dropped}
    assert dropped >= 2


def test_last_n_turns_keeps_the_last_exchanges_of_every_chat(tiny_llama_dir):
    from tunesmith.config.data_sections import LastTurnsConfig

    policy = LastTurnsConfig(last_n_turns=2)
    short, dropped = shorten_history(_long_chats(1, turns=4)[0]["messages"], policy, fits=lambda m: True)
    assert dropped == 2
    assert [m["content"][:10] for m in short] == ["you are qu", "question 2", "answer 2: ", "question 3", "answer 3: "]
    assert shorten_history(_long_chats(1, turns=1)[0]["messages"], policy, fits=lambda m: True)[1] == 0


def test_history_is_counted_in_the_summary_and_refused_outside_chat(tmp_path, tiny_llama_dir, tiny_bert_dir):
    from tunesmith.jsonl import write_jsonl

    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    write_jsonl(tmp_path / "long.jsonl", _long_chats(24, turns=4))
    config = load_recipe(recipe, ["data.train=long.jsonl", "data.history=drop_oldest", "data.max_length=96",
                                  "train.max_steps=2"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    report = summary["data"]["history_train"]
    # Every training chat was too long; each lost its oldest exchanges and then fitted whole.
    assert report == {"policy": "drop_oldest", "chats_shortened": summary["data"]["train_rows"],
                      "turns_dropped": report["turns_dropped"]}
    assert report["turns_dropped"] >= 2 * report["chats_shortened"]
    assert summary["data"]["overlength_train"]["rows"] == 0
    with pytest.raises(ConfigError, match="data.history only applies to task"):
        (tmp_path / "c").mkdir()
        load_recipe(write_cls_recipe(tmp_path / "c", tiny_bert_dir), ["data.history=drop_oldest"])
