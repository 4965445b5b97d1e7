"""Vocabulary expansion: mining, the new rows' start, training only them, and the round trip
train -> reload -> merge -> serve -> export with the same logits and greedy answers."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.config.load import load_recipe
from tunesmith.errors import ConfigError
from tunesmith.export import export_run
from tunesmith.jsonl import write_jsonl
from tunesmith.methods.saved import load_trained
from tunesmith.models.load import resolve_model_source
from tunesmith.models.vocab import add_to_tokenizer, mine_terms, resize_embeddings
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.runner import run_recipe
from tunesmith.testing import write_chat_recipe

NEW = ["量子计算机", "Tunesmithology"]
PROMPTS = ["什么是量子计算机？", "Tell me about Tunesmithology.", "hello"]


def _chats(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"question {i}: what is 量子计算机 in Tunesmithology?"},
                          {"role": "assistant", "content": "量子计算机 is the heart of Tunesmithology. 量子计算机!"}]}
            for i in range(n)]


def test_mining_finds_frequent_words_the_tokenizer_splits():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:smollm2-135m"))
    texts = ["我们的量子计算机很快。量子计算机需要冷却。"] * 3 + ["Tunesmithology rocks; tunesmithology again"] * 3 \
        + ["a rare word: floccinaucinihilipilification", "the the the the the"]
    mined = mine_terms(texts, tokenizer, max_new_tokens=10, min_freq=3, min_pieces=3)
    terms = {m["term"]: m for m in mined}
    assert "计算机" in terms and "Tunesmithology" in terms  # jieba: 我们/的/量子/计算机/很快
    assert "floccinaucinihilipilification" not in terms  # too rare
    assert "the" not in terms  # a token already
    saves = [m["saves"] for m in mined]
    assert saves == sorted(saves, reverse=True)  # the most pieces saved first
    word = terms["计算机"]
    assert word["count"] == 6 and word["pieces"] == len(tokenizer("计算机", add_special_tokens=False)["input_ids"])


def test_new_rows_start_as_the_mean_of_their_pieces(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    old = model.get_input_embeddings().weight.detach().clone()
    added = add_to_tokenizer(tokenizer, NEW + ["hello"])  # "hello" is a token already: skipped
    assert added.tokens == NEW
    rows = resize_embeddings(model, added, len(tokenizer))
    weight = model.get_input_embeddings().weight
    assert rows % 64 == 0 and rows >= len(tokenizer) and weight.shape[0] == rows
    for token_id, pieces in zip(added.ids, added.pieces):
        assert len(pieces) >= 3
        assert torch.allclose(weight[token_id], old[pieces].mean(dim=0))
    assert torch.equal(weight[: old.shape[0]], old)  # old rows untouched
    assert torch.allclose(weight[-1], old.mean(dim=0))  # rounding rows: the mean, deterministically
    assert tokenizer("什么是量子计算机", add_special_tokens=False)["input_ids"].count(added.ids[0]) == 1


def test_new_rows_train_at_their_own_rate_beside_the_adapter(tiny_llama_dir):
    from tunesmith.config.methods import LoraMethod
    from tunesmith.methods import apply_method
    from tunesmith.train.optim import build_optimizer

    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LoraMethod(r=2), "causal_lm",
                         new_token_ids=[5, 9], new_token_lr_scale=10.0)
    rate = {n: g["lr"] for g in build_optimizer(model, 1e-3, 0.0).param_groups
            for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    rows = [n for n in rate if "trainable_tokens_delta" in n]
    assert rows and all(rate[n] == pytest.approx(1e-2) for n in rows)
    assert all(r == pytest.approx(1e-3) for n, r in rate.items() if "lora_" in n)


@pytest.fixture(scope="module")
def vocab_run(tmp_path_factory):
    """A LoRA chat run with two new tokens on a tiny Llama with SmolLM2's BPE tokenizer (tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:smollm2-135m"))
    base = tmp_path_factory.mktemp("bpe-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.3,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    folder = tmp_path_factory.mktemp("vocab")
    recipe = write_chat_recipe(folder, base)
    write_jsonl(folder / "chats.jsonl", _chats(40))
    config = load_recipe(recipe, ["model.add_tokens=[量子计算机, Tunesmithology]", "train.epochs=12",
                                  "data.max_length=96"])
    summary = run_recipe(config, base_dir=folder, show_progress=False, log=lambda *_: None)
    return folder / "runs" / "tiny-chat", summary, base


def _greedy(model, final, prompts=PROMPTS) -> list[str]:
    meta = json.loads((final / "tunesmith.json").read_text())
    objective = CausalLMObjective(AutoTokenizer.from_pretrained(final), 96, meta["system_prompt"])
    return objective.answer(model, prompts, 8, torch.device("cpu"))


def _logits(model, final) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(final)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_only_the_new_rows_train_and_the_run_reloads_to_its_own_eval_loss(vocab_run):
    run, summary, base = vocab_run
    assert summary["vocab"]["added"] == 2 and summary["vocab"]["rows"] % 64 == 0
    assert summary["plan"]["vocab_rows"] == summary["vocab"]["rows"]  # the memory preflight planned the new rows
    final = run / "final"
    model, tokenizer, meta = load_trained(final)
    assert tokenizer.convert_tokens_to_ids(NEW) == meta["vocab"]["ids"]
    # Trainable: the adapter plus 2 rows of 32 (tied: the output rows are the same tensor).
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert summary["trainable_params"] == lora + 2 * 32
    # The new rows moved away from their start (the mean of their pieces); the old rows did not.
    base_model = AutoModelForCausalLM.from_pretrained(base)
    merged = model.merge_and_unload()
    emb, old = merged.get_input_embeddings().weight, base_model.get_input_embeddings().weight
    pieces = meta["vocab"]["pieces"]
    for token_id, piece_ids in zip(meta["vocab"]["ids"], pieces):
        assert not torch.allclose(emb[token_id], old[piece_ids].mean(dim=0), atol=1e-3)
    assert torch.equal(emb[: old.shape[0]], old)
    # Reloaded: the held-out loss the run reported, exactly.
    model, _, _ = load_trained(final)
    rows = [json.loads(line) for line in (run / "eval_set.jsonl").read_text().splitlines()]
    objective = CausalLMObjective(tokenizer, 96, meta["system_prompt"])
    features = objective.encode(rows)
    with torch.no_grad():
        batch = objective.collate(features)
        loss = float(objective.loss_sum(model, batch) / objective.count_targets(batch))
    assert loss == pytest.approx(summary["eval_after"]["eval_loss"], rel=1e-4)


def test_merge_serve_and_exports_keep_the_logits_and_answers(vocab_run, tmp_path):
    from tunesmith.serve.engine import Engine, GenerationParams, Job, chat_prompt
    from tunesmith.serve.registry import Registry

    run, _, _ = vocab_run
    final = run / "final"
    model, _, _ = load_trained(final)
    logits, answers = _logits(model, final), _greedy(model, final)
    assert any("量子计算机" in a or "Tunesmithology" in a for a in answers)  # the new tokens are generated
    # merged: a plain transformers model with the enlarged vocabulary
    export_run(run, "merged", tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert plain.config.vocab_size % 64 == 0
    assert torch.allclose(_logits(plain, tmp_path / "merged"), logits, atol=1e-5)
    assert _greedy(plain, final) == answers
    # served: its own model (an enlarged base cannot be shared), the same greedy answers
    registry = Registry()
    registry.add_run("vocab", run)
    engine = Engine(registry, max_batch=4)
    try:
        entry = registry.get("vocab")
        served = [engine.submit(Job("generate", entry, [chat_prompt(entry, [{"role": "user", "content": p}])],
                                    GenerationParams(max_tokens=8, temperature=0))).result(timeout=120)["text"]
                  for p in PROMPTS]
    finally:
        engine.close()
    assert [text.strip() for text in served] == answers  # the server keeps the first token's leading space
    # ONNX, INT8, GGUF: each export's own parity gate against the merged model
    for kind in ("onnx", "int8", "gguf"):
        report = export_run(run, kind, tmp_path / kind)
        checks = [c for c in report.get("checks", []) if "passed" in c]
        assert checks and all(c["passed"] for c in checks), (kind, report.get("checks"))
    # The GGUF file lists the new tokens at their ids (user-defined), and pads to the matrix's rows.
    from gguf import GGUFReader

    fields = GGUFReader(str(tmp_path / "gguf" / "model-f16.gguf")).fields
    tokens, types = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    ids = json.loads((final / "tunesmith.json").read_text())["vocab"]["ids"]
    assert [tokens[i] for i in ids] == NEW and [types[i] for i in ids] == [4, 4]  # USER_DEFINED
    assert len(tokens) == plain.config.vocab_size and tokens[-1].startswith("[PAD")


def test_vocabulary_settings_are_checked(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    with pytest.raises(ConfigError, match="use method full, lora or qlora"):
        load_recipe(recipe, ["model.add_tokens=[量子计算机]", "method={type: ia3}"])


def test_expand_vocab_mines_the_training_chats(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    write_jsonl(tmp_path / "chats.jsonl", _chats(30))
    config = load_recipe(recipe, ["model.expand_vocab={min_freq: 10, max_new_tokens: 5}", "train.max_steps=2"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    terms = {t["term"]: t for t in summary["vocab"]["terms"]}
    # jieba: 量子 / 计算机; MiniLM's tokenizer has one piece per Chinese character.
    assert "计算机" in terms and terms["计算机"]["pieces"] == 3 and "量子" not in terms  # 2 pieces: below min_pieces
    assert terms["计算机"]["count"] == 30 * 3  # three times per chat, all 30 chats of the source
    saved = AutoTokenizer.from_pretrained(tmp_path / "runs" / "tiny-chat" / "final")
    assert len(saved("量子计算机", add_special_tokens=False)["input_ids"]) == 3  # 量, 子, 计算机
