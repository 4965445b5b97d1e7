"""Freeze and BitFit store only the tensors they trained, and load back to the same model."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tunesmith.config.load import load_recipe
from tunesmith.errors import ModelError
from tunesmith.export import export_run
from tunesmith.methods.delta import DELTA_FILE, load_delta
from tunesmith.methods.saved import load_trained
from tunesmith.rundir import read_model_meta
from tunesmith.runner import run_recipe
from tunesmith.testing import base_tokenizer, sentiment_rows, write_chat_recipe, write_cls_recipe


def _trained_run(tmp_path, tiny_bert_dir, method: str, *sets):
    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    config = load_recipe(recipe, [f"method.type={method}", "train.epochs=2", "train.lr=5e-3", *sets])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    return tmp_path / "runs" / "tiny-cls", summary


def _logits(model, tokenizer_dir) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tokenizer([r["text"] for r in sentiment_rows(8, seed=3)], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("method, sets", [("bitfit", []), ("freeze", ["method.train_last_n_layers=1"])])
def test_a_delta_reloads_to_the_trained_model(tmp_path, tiny_bert_dir, method, sets):
    run, summary = _trained_run(tmp_path, tiny_bert_dir, method, *sets)
    final = run / "final"
    assert (final / DELTA_FILE).is_file() and not (final / "model.safetensors").exists()
    assert read_model_meta(final)["weights"] == "delta"
    base_bytes = (tiny_bert_dir / "model.safetensors").stat().st_size
    delta_bytes = (final / DELTA_FILE).stat().st_size
    assert delta_bytes < 0.8 * base_bytes if method == "freeze" else delta_bytes < 0.05 * base_bytes
    model, _, _ = load_trained(final)
    # The reloaded model predicts exactly what the run measured on its held-out rows.
    from tunesmith.objectives.classification import ClassificationObjective
    import json

    rows = [json.loads(line) for line in (run / "eval_set.jsonl").read_text().splitlines()]
    objective = ClassificationObjective(base_tokenizer(), summary["labels"], 64)
    probs = objective.predict(model, objective.encode(rows), 64, torch.device("cpu"))
    saved = [json.loads(line)["probs"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert torch.allclose(torch.tensor(probs, dtype=torch.float32),
                          torch.tensor([[p[label] for label in summary["labels"]] for p in saved]), atol=1e-6)
    # Untrained tensors are the base's, trained ones moved.
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    moved = {n for n, p in model.state_dict().items() if n in base.state_dict() and not torch.equal(p, base.state_dict()[n])}
    trained = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(final / DELTA_FILE)))
    assert moved <= trained and moved


def test_the_model_card_loader_gives_the_same_logits(tmp_path, tiny_bert_dir):
    run, _ = _trained_run(tmp_path, tiny_bert_dir, "bitfit")
    final = run / "final"
    card = (final / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", card, re.S)[-1]
    assert "load_partial" in code and DELTA_FILE in code
    namespace: dict = {}
    exec(code.replace('"final"', repr(str(final))), namespace)  # the card's own code, as a user would run it
    ours, _, _ = load_trained(final)
    assert torch.equal(_logits(namespace["model"], final), _logits(ours, final))


def test_merge_and_onnx_export_work_from_a_delta(tmp_path, tiny_bert_dir):
    run, _ = _trained_run(tmp_path, tiny_bert_dir, "bitfit")
    merged = export_run(run, "merged", tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    ours, _, _ = load_trained(run / "final")
    assert torch.equal(_logits(plain, run / "final"), _logits(ours, run / "final"))
    print(merged)
    onnx = export_run(run, "onnx", tmp_path / "onnx")
    print(onnx)


def test_a_freeze_chat_delta_reloads(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    config = load_recipe(recipe, ["method={type: freeze, train_last_n_layers: 1}", "train.max_steps=3"])
    run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    final = tmp_path / "runs" / "tiny-chat" / "final"
    model, tokenizer, meta = load_trained(final)
    assert meta["weights"] == "delta"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = tokenizer("who are you?", return_tensors="pt")
    with torch.no_grad():
        assert not torch.equal(model(**ids).logits, base(**ids).logits)
    load_delta(base, final)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, base.eval()(**ids).logits)


def test_a_delta_refuses_another_base(tmp_path, tiny_bert_dir, tiny_llama_dir):
    run, _ = _trained_run(tmp_path, tiny_bert_dir, "bitfit")
    with pytest.raises(ModelError, match="tensors the base model lacks"):
        load_delta(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), run / "final")
