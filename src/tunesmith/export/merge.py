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
