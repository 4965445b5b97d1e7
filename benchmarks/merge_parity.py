"""Reload and merge parity of trained runs, on the run's own eval predictions.

For each run directory given (e.g. the runs of `tunesmith compare`), prints one JSON line:
- reload_max_abs: |probabilities of final/ reloaded| - |predictions.jsonl written by the run|
- merge_max_abs_logit: |merged model logits - base+adapter logits| (mergeable methods;
  QLoRA merges onto the full-precision base, and quantization_gap_max_abs_logit shows
  how far that model is from the 4-bit one it was trained on)
- logit_scale: max |logit|, to read the difference against

usage: python benchmarks/merge_parity.py runs/compare-demo/runs/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tunesmith.errors import ConfigError
from tunesmith.methods.saved import load_trained, merge_trained


def logits_for(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            enc = tokenizer(texts[start : start + 64], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float())
    return torch.cat(out)


def main(run_dirs: list[str]) -> None:
    for run in map(Path, run_dirs):
        predictions_file = run / "predictions.jsonl"
        if not (run / "final" / "tunesmith.json").is_file() or not predictions_file.is_file():
            continue
        rows = [json.loads(line) for line in predictions_file.read_text().splitlines()]
        model, tokenizer, meta = load_trained(run / "final")
        texts = [r["text"] for r in rows]
        logits = logits_for(model, tokenizer, texts, meta["max_length"])
        expected = torch.tensor([[r["probs"][label] for label in meta["labels"]] for r in rows])
        result = {"run": run.name, "method": meta["method"],
                  "reload_max_abs": float((torch.softmax(logits, -1) - expected).abs().max()),
                  "logit_scale": float(logits.abs().max())}
        if meta["method"] == "qlora":
            # Merging goes onto the full-precision base; the gap to the 4-bit model is quantisation.
            model, _, _ = load_trained(run / "final", full_precision=True)
            full_logits = logits_for(model, tokenizer, texts, meta["max_length"])
            result["quantization_gap_max_abs_logit"] = float((full_logits - logits).abs().max())
            logits = full_logits
        if meta["method"] not in ("full", "freeze", "bitfit"):
            try:
                merged = merge_trained(model, meta["method"])
                result["merge_max_abs_logit"] = float((logits_for(merged, tokenizer, texts, meta["max_length"]) - logits).abs().max())
            except ConfigError as exc:
                result["merge"] = str(exc).split(":")[0]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
