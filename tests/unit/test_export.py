"""Exports: merged weights pass a parity gate and reload as plain transformers models;
ONNX graphs reproduce PyTorch's logits in onnxruntime; INT8 reports measured changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import sentiment_rows, write_jsonl
from tunesmith.synthetic import make_lora_run
from tunesmith.errors import ConfigError, ModelError
from tunesmith.export import export_run
from tunesmith.methods.saved import load_trained


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_bert_dir):
    run = make_lora_run(tmp_path_factory.mktemp("cls") / "run", tiny_bert_dir, "classification", seed=1,
                        labels=["negative", "positive"])
    write_jsonl(run / "eval_set.jsonl", [{"text": r["text"], "label": r["label"]} for r in sentiment_rows(40, seed=3)])
    (run / "summary.json").write_text("{}")
    return run


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_llama_dir):
    run = make_lora_run(tmp_path_factory.mktemp("chat") / "run", tiny_llama_dir, "causal_lm", seed=2,
                        system_prompt="be brief.")
    write_jsonl(run / "eval_set.jsonl", [
        {"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]}
        for i in range(12)])
    (run / "summary.json").write_text("{}")
    return run


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_merged_export_passes_gate_and_reloads_in_plain_transformers(cls_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    report = export_run(cls_run, "merged", tmp_path / "merged")
    check = report["checks"][0]
    assert check["passed"] and check["max_abs_diff"] <= check["tolerance"] and check["probes"] >= 5
    saved = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert saved["checks"][0]["max_abs_diff"] == check["max_abs_diff"]
    assert (tmp_path / "merged" / "model.safetensors").is_file()

    adapter, tokenizer, _ = load_trained(cls_run / "final")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    batch = _batch(tokenizer, ["a fine film", "dull and long, with nothing to say"])
    with torch.no_grad():
        expected, got = adapter(**batch).logits, plain(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert plain.config.id2label == {0: "negative", 1: "positive"}
    # And Tunesmith loads the merged folder as a full model.
    again, _, meta = load_trained(tmp_path / "merged")
    assert meta["method"] == "full" and meta["merged_from"]["method"] == "lora"


def test_merge_gate_refuses_a_merge_that_changes_the_model(cls_run, tmp_path, monkeypatch):
    import tunesmith.export.merge as merge

    real = merge.merge_trained

    def tampered(model, method):
        merged = real(model, method)
        with torch.no_grad():
            merged.classifier.out_proj.weight.add_(0.01) if hasattr(merged.classifier, "out_proj") \
                else merged.classifier.weight.add_(0.01)
        return merged

    monkeypatch.setattr(merge, "merge_trained", tampered)
    with pytest.raises(ModelError, match="differ from base \\+ adapter"):
        export_run(cls_run, "merged", tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_unmergeable_methods_are_clear_errors(cls_run, tmp_path):
    import shutil

    run = tmp_path / "prompt-run"
    shutil.copytree(cls_run, run)
    meta = json.loads((run / "final" / "tunesmith.json").read_text())
    (run / "final" / "tunesmith.json").write_text(json.dumps(dict(meta, method="prompt")))
    with pytest.raises(ConfigError, match="cannot be merged"):
        export_run(run, "merged", tmp_path / "m")
    with pytest.raises(ConfigError, match="cannot be exported to ONNX"):
        export_run(run, "onnx", tmp_path / "o")


def test_export_refuses_bad_targets(cls_run, tmp_path):
    with pytest.raises(ConfigError, match="Unknown export format"):
        export_run(cls_run, "tflite")
    with pytest.raises(ConfigError, match="neither a run directory"):
        export_run(tmp_path, "merged")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        export_run(cls_run, "merged", tmp_path / "taken")
    assert (tmp_path / "taken" / "x").read_text() == "keep me"


@pytest.mark.parametrize("fixture", ["cls_run", "chat_run"])
def test_onnx_export_matches_pytorch_on_new_inputs(fixture, request, tmp_path):
    from tunesmith.export.onnx import OnnxModel

    run = request.getfixturevalue(fixture)
    report = export_run(run, "onnx", tmp_path / "onnx")
    assert [c["passed"] for c in report["checks"]] == [True, True]
    model, tokenizer, meta = load_trained(run / "final")
    session = OnnxModel(tmp_path / "onnx" / "model.onnx")
    # Shapes the graph was not traced with: batch 3, a longer sequence, padding.
    batch = _batch(tokenizer, ["one", "a much longer sentence than any of the probe texts, to be sure it grows",
                               "two words"])
    with torch.no_grad():
        expected = model(**batch).logits
    got = session(**batch).logits
    if meta["task"] == "causal_lm":
        mask = batch["attention_mask"].bool()
        expected, got = expected[mask], got[mask]
    assert np.abs(expected.numpy() - got.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))
    assert json.loads((tmp_path / "onnx" / "tunesmith.json").read_text())["format"] == "onnx"


@pytest.mark.parametrize("fixture", ["cls_run", "chat_run"])
def test_int8_export_measures_metric_size_and_latency(fixture, request, tmp_path):
    run = request.getfixturevalue(fixture)
    report = export_run(run, "int8", tmp_path / "int8")
    metrics = report["metrics"]
    key = "accuracy" if fixture == "cls_run" else "eval_loss"
    assert set(metrics) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    # The fp32 graph scores like PyTorch; quantisation's own change is what is reported.
    assert metrics["onnx_fp32"][key] == pytest.approx(metrics["pytorch_fp32"][key], abs=1e-4)
    assert report["change"][key] == pytest.approx(metrics["onnx_int8"][key] - metrics["onnx_fp32"][key], abs=1e-6)
    assert report["size_mb"]["onnx_int8"] < report["size_mb"]["onnx_fp32"]
    assert all(v > 0 for v in report["latency_ms_per_example"].values())
    assert report["eval_examples"] == (40 if fixture == "cls_run" else 12)
    # Every quantisation setting was scored; the kept one is the best on the held-out set.
    candidates = report["quantization"]["candidates"]
    assert len(candidates) == 3 and metrics["onnx_int8"] == candidates[report["quantization"]["chosen"]]
    best = max(c[key] for c in candidates.values()) if key == "accuracy" else min(c[key] for c in candidates.values())
    assert metrics["onnx_int8"][key] == best
    assert (tmp_path / "int8" / "export.json").is_file()


def test_int8_warns_when_quality_drops_beyond_the_guides_two_percent():
    from tunesmith.export.quantize import _quality_warning

    assert _quality_warning({"accuracy": 0.82}, {"accuracy": 0.812}) is None
    assert "lowers accuracy by 3.0 points" in _quality_warning({"accuracy": 0.82}, {"accuracy": 0.79})
    assert _quality_warning({"eval_loss": 1.26}, {"eval_loss": 1.29}) is None
    assert "raises the eval loss by 45%" in _quality_warning({"eval_loss": 1.26}, {"eval_loss": 1.83})


def test_int8_needs_the_runs_held_out_set(cls_run, tmp_path):
    import shutil

    run = tmp_path / "no-eval"
    shutil.copytree(cls_run, run)
    (run / "eval_set.jsonl").unlink()
    with pytest.raises(ConfigError, match="eval_set.jsonl"):
        export_run(run, "int8", tmp_path / "out")


def test_cli_export_prints_the_checks(cls_run, tmp_path, capsys):
    from tunesmith.cli import main

    assert main(["export", str(cls_run), "--to", "merged", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "merged logits = base + adapter logits" in out and "passed" in out
    assert main(["export", str(tmp_path / "nothing"), "--to", "merged"]) == 2
