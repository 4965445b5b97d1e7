"""``export --to merged``: fold the adapter into the base, and prove nothing changed.

The gate compares logits of the merged model with base + adapter on the probe batch
before anything is written; a merge that changes the model is an error, not a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.config.methods import method_info
from tunesmith.errors import ConfigError, ModelError
from tunesmith.export.probes import max_abs_diff, probe_batch, probe_texts
from tunesmith.data.template_check import check_template
from tunesmith.methods.saved import load_trained, merge_trained
from tunesmith.models.load import load_tokenizer
from tunesmith.rundir import read_model_meta, write_model_meta

MERGE_TOLERANCE = 1e-4  # fp32: relative to the logit scale, max(1, max |logit|)
# The run's own eval was computed in its training precision (bf16 autocast moves class
# probabilities by up to ~1e-2); a model that is not the one trained moves them far more.
RECORDED_TOLERANCE = 0.05
RECORDED_ROWS = 32


@torch.inference_mode()
def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits.float()


def merged_model(final_dir: Path, run_dir: Path | None, tolerance: float = MERGE_TOLERANCE):
    """Load the run, merge it, and check the merge: returns ``(model, tokenizer, meta, check)``.

    QLoRA adapters are merged into the full-precision base (merging into 4-bit weights
    would round the adapter away); the check then compares against that same base.

    Raises:
        ConfigError: the method cannot be merged.
        ModelError: merged logits differ from base + adapter beyond ``tolerance``.
    """
    method = read_model_meta(final_dir)["method"]
    if not method_info(method).mergeable:
        raise ConfigError(
            f"A model trained with method '{method}' cannot be merged: its virtual tokens or bottleneck layers add "
            "computation that no base weight can absorb.",
            "Serve it with its adapter instead ('tunesmith serve --adapter NAME=RUN_DIR').",
        )
    model, tokenizer, meta = load_trained(final_dir, full_precision=True)
    recorded_predictions_check(model, tokenizer, meta, run_dir)
    batch = probe_batch(tokenizer, probe_texts(meta, tokenizer, run_dir), meta["task"], meta.get("max_length") or 512)
    reference = logits_of(model, batch)
    merged = merge_trained(model, meta["method"]).eval()
    after = logits_of(merged, batch)
    mask = batch["attention_mask"] if meta["task"] == "causal_lm" else None
    diff = max_abs_diff(reference, after, mask)
    scale = max(1.0, float(reference.abs().max()))
    check = {
        "name": "merged logits = base + adapter logits",
        "probes": int(batch["input_ids"].shape[0]),
        "max_abs_diff": diff,
        "logit_scale": scale,
        "tolerance": tolerance * scale,
        "passed": diff <= tolerance * scale,
    }
    if not check["passed"]:
        raise ModelError(
            f"The merged model's logits differ from base + adapter by {diff:.3g} (allowed {tolerance * scale:.3g}) "
            f"on {check['probes']} probes, so it was not exported.",
            "Serve the adapter on its base instead, and report this run (tunesmith.json) as a bug.",
        )
    return merged, tokenizer, meta, check


def export_merged(final_dir: Path, run_dir: Path | None, out: Path) -> dict:
    """Write the merged model (safetensors + tokenizer with its chat template) to ``out``."""
    model, tokenizer, meta, check = merged_model(final_dir, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    check_template(final_dir, load_tokenizer(str(out)), "the merged export")
    # A merged model is a plain full model: Tunesmith (and the server) load it as one.
    merged_meta = dict(meta, method="full", method_config={"type": "full"}, quantization=None,
                       merged_from={"method": meta["method"], "final_dir": str(final_dir)})
    write_model_meta(out, merged_meta)
    return {"checks": [check]}


@torch.inference_mode()
def recorded_predictions_check(model, tokenizer, meta: dict, run_dir: Path | None) -> dict | None:
    """For a classifier whose run recorded its eval predictions: the loaded final/ must give
    the same class probabilities on the first rows (a second line of defence after the file
    hashes: a final/ swapped together with its hashes is still caught). None when there is
    nothing recorded to compare with.

    Raises:
        ModelError: a probability differs by more than RECORDED_TOLERANCE, naming the row.
    """
    # Runs written before hashes were recorded did not record sentence pairs' second texts.
    if run_dir is None or meta.get("task") != "classification" or not meta.get("labels") or "files" not in meta:
        return None
    from tunesmith.objectives.classification import ClassificationObjective
    from tunesmith.rundir import RunDir

    labels = meta["labels"]
    rows = [r for r in RunDir(run_dir).predictions()[:RECORDED_ROWS] if set(r.get("probs") or {}) == set(labels)]
    if not rows:
        return None
    objective = ClassificationObjective(tokenizer, labels, meta.get("max_length") or 512, overlength="truncate")
    features = objective.encode([{"text": r["text"], "label": labels[0],
                                  **({"text_pair": r["text_pair"]} if "text_pair" in r else {})} for r in rows])
    now = objective.predict(model, features, 16, "cpu")
    recorded = torch.tensor([[r["probs"][label] for label in labels] for r in rows])
    worst = int((now - recorded).abs().max(dim=1).values.argmax())
    diff = float((now[worst] - recorded[worst]).abs().max())
    if diff > RECORDED_TOLERANCE:
        raise ModelError(
            f"{run_dir}/final does not reproduce the run's recorded predictions: on eval row {worst} "
            f"({rows[worst]['text'][:60]!r}) the run recorded {dict(zip(labels, recorded[worst].tolist()))}, the "
            f"model now gives {dict(zip(labels, [round(x, 4) for x in now[worst].tolist()]))}.",
            "The final/ folder is not the model this run trained: train again, or export the run it came from.")
    return {"name": "final/ = the run's recorded predictions", "rows": len(rows), "max_abs_diff": diff,
            "tolerance": RECORDED_TOLERANCE, "passed": True}
