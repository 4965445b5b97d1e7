"""Every method trains through the real CLI on both tasks: the loss falls, the eval metric
improves, and final/ reloads (tunesmith.methods.saved.load_trained) to the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.eval.evaluate import evaluate
from tunesmith.methods.saved import load_trained
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.jsonl import write_jsonl
from tunesmith.synthetic import chat_rows

METHODS = {
    "full": {"type": "full"},
    "freeze": {"type": "freeze", "train_last_n_layers": 1},
    "lora": {"type": "lora", "r": 8, "dropout": 0.0},
    "dora": {"type": "lora", "r": 8, "dropout": 0.0, "use_dora": True, "use_rslora": True},
    "pissa": {"type": "lora", "r": 8, "dropout": 0.0, "init": "pissa", "lora_plus_ratio": 4},
    "qlora": {"type": "qlora", "r": 8, "dropout": 0.0, "compute_dtype": "float32"},
    "adalora": {"type": "adalora", "init_r": 8, "target_r": 4, "dropout": 0.0, "delta_t": 2},
    "prefix": {"type": "prefix", "num_virtual_tokens": 8, "projection": True, "projection_hidden": 32},
    "prompt": {"type": "prompt", "num_virtual_tokens": 8},
    "ptuning": {"type": "ptuning", "version": 1, "num_virtual_tokens": 8, "encoder_hidden_size": 32},
    "ptuning2": {"type": "ptuning", "version": 2, "num_virtual_tokens": 8},
    "ia3": {"type": "ia3"},
    "adapter": {"type": "adapter", "style": "houlsby", "reduction_factor": 4},
    "bitfit": {"type": "bitfit"},
}
# Classification runs on the packaged MiniLM: methods that keep the base frozen need real
# features to adapt (a random tiny encoder has none). Learning rates suit this short budget.
CLS_LR = {"full": 1e-4, "freeze": 5e-3, "lora": 2e-3, "dora": 2e-3, "pissa": 1e-3, "qlora": 2e-3, "adalora": 5e-3,
          "adapter": 2e-3, "bitfit": 5e-3, "prefix": 5e-3}
CHAT_LR = {"full": 5e-3, "ptuning2": 1e-1}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train(recipe: Path, method: dict, lr: float, *extra: str) -> int:
    args = ["train", str(recipe), "--set", f"method={json.dumps(method)}", "--set", f"train.lr={lr}"]
    for e in extra:
        args += ["--set", e]
    return main(args)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_learns_classification(name, cls_recipe):
    run_dir = cls_recipe.parent / "runs" / "tiny-cls"
    assert _train(cls_recipe, METHODS[name], CLS_LR.get(name, 2e-2), "model.name=builtin:minilm", "train.epochs=3",
                  "train.save_every=null", "train.eval_every=null") == 0
    summary = _summary(run_dir)
    assert summary["status"] == "completed" and summary["method"] == METHODS[name]["type"]
    losses = _losses(run_dir)
    assert min(losses[-3:]) < losses[0]
    assert summary["eval_after"]["accuracy"] > summary["eval_before"]["accuracy"] + 0.1, summary["eval_after"]
    if name != "full":
        assert summary["trainable_params"] < summary["total_params"] / 2

    # final/ reloads and reproduces the run's own eval predictions.
    model, tokenizer, meta = load_trained(run_dir / "final")
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    enc = tokenizer([p["text"] for p in predictions], padding=True, truncation=True, max_length=meta["max_length"],
                    return_tensors="pt")
    with torch.inference_mode():
        probs = torch.softmax(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)
    expected = torch.tensor([[p["probs"]["negative"], p["probs"]["positive"]] for p in predictions])
    torch.testing.assert_close(probs, expected, atol=2e-5, rtol=1e-4)


CHAT_METHODS = [n for n in METHODS if n != "bitfit"]


@pytest.mark.parametrize("name", CHAT_METHODS)
def test_every_method_learns_chat_sft(name, chat_recipe):
    write_jsonl(chat_recipe.parent / "eval-chats.jsonl", chat_rows(12))
    run_dir = chat_recipe.parent / "runs" / "tiny-chat"
    assert _train(chat_recipe, METHODS[name], CHAT_LR.get(name, 2e-2), "data.eval=eval-chats.jsonl") == 0
    summary = _summary(run_dir)
    assert summary["status"] == "completed"
    losses = _losses(run_dir)
    assert min(losses[-3:]) < losses[0]
    assert summary["eval_after"]["eval_loss"] < 0.9 * summary["eval_before"]["eval_loss"]

    model, tokenizer, meta = load_trained(run_dir / "final")
    objective = CausalLMObjective(tokenizer, meta["max_length"], meta["system_prompt"])
    rows = [json.loads(line) for line in (chat_recipe.parent / "eval-chats.jsonl").read_text().splitlines()]
    reloaded = evaluate(objective, model, objective.encode(rows), 8, torch.device("cpu"), ("eval_loss",))
    assert reloaded["eval_loss"] == pytest.approx(summary["eval_after"]["eval_loss"], rel=1e-4)
    probes = json.loads((run_dir / "probes.json").read_text())
    assert all(isinstance(p["after"], str) for p in probes)
