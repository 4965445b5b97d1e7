"""``export --to pruned``: remove the least important heads and FFN neurons, optionally
recover with a short fine-tune, and keep the result only if the held-out metric allows it.

Importance is scored on the run's *training* rows (re-read through its config.yaml), and
recovery trains on them too, so the held-out set the gate measures on never chooses what is
removed. Two checks: the pruned model's logits equal the model with the same units masked
(so the right rows and columns were cut), and the headline metric drops by at most
``max_drop`` (accuracy points for a score such as accuracy; the fraction a loss may rise).
"""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path

import torch

from tunesmith.errors import ConfigError, ModelError, TunesmithError
from tunesmith.eval.metrics import higher_is_better
from tunesmith.export.measure import (batch_latency_ms, change, folder_mb, latency_ms, objective_for,
                                      score)
from tunesmith.export.merge import logits_of, merged_model
from tunesmith.export.probes import max_abs_diff, probe_batch, probe_texts
from tunesmith.models.prune import (check_structure, choose_units, count_parameters, find_layout, keep_masks,
                                    magnitude_importance, pruned_copy, taylor_importance, unit_masks)
from tunesmith.objectives.tasks import saved_spec, spec_for
from tunesmith.rundir import RunDir, write_model_meta

IMPORTANCE = ("taylor", "magnitude")
SCORING_ROWS = 512  # training rows the Taylor importance is summed over
PARITY_TOLERANCE = 1e-4  # relative to the logit scale, as the merge gate
RECOVER_BATCH = 16


def export_pruned(final_dir: Path, run_dir: Path | None, out: Path, sparsity: float, structure: str = "ffn",
                  recover_steps: int = 0, max_drop: float = 0.02, importance: str = "taylor",
                  recover_lr: float = 5e-5) -> dict:
    """Prune the run's model, gate it on the held-out set and save it to ``out`` as a plain
    transformers model; returns what export.json holds.

    Raises:
        ConfigError: no held-out set, unknown structure/importance, heads asked of a BERT model,
            or the training data (needed for Taylor scores or recovery) no longer readable.
        ModelError: the pruned model differs from the masked one, or the metric dropped by
            more than ``max_drop`` (the message carries both numbers; nothing is written).
    """
    if importance not in IMPORTANCE:
        raise ConfigError(f"Unknown --importance {importance!r}.", f"Use one of: {', '.join(IMPORTANCE)}.")
    rows = RunDir(run_dir).eval_rows() if run_dir is not None else []
    if not rows:
        raise ConfigError(f"Pruning re-measures the model on the run's held-out set, but {run_dir or final_dir} "
                          "has no eval_set.jsonl.", "Point to the run directory, not a copied final/ folder.")
    model, tokenizer, meta, merge_check = merged_model(final_dir, run_dir)
    model = model.float().eval()
    layout = find_layout(model)
    check_structure(layout, structure)
    objective = objective_for(meta, tokenizer)
    metrics = saved_spec(meta).metrics
    if meta["task"] != "classification":
        metrics = ("eval_loss", "perplexity")  # what a causal LM's held-out rows measure without generating
    headline = metrics[0]
    eval_features = objective.encode(rows)
    train_features = objective.encode(_training_rows(run_dir)) if importance == "taylor" or recover_steps else []

    before = _measure(model, objective, eval_features, metrics)
    if importance == "taylor":
        sample = random.Random(0).sample(train_features, min(SCORING_ROWS, len(train_features)))
        batches = [objective.collate(sample[i:i + RECOVER_BATCH]) for i in range(0, len(sample), RECOVER_BATCH)]
        scores = taylor_importance(model, layout, objective, batches)
    else:
        scores = magnitude_importance(model, layout)
    keep = choose_units(layout, scores, sparsity, structure)
    pruned = pruned_copy(model, layout, keep)
    parity = _parity_check(model, pruned, layout, keep, tokenizer, meta, run_dir)
    after = _measure(pruned, objective, eval_features, metrics)
    result_metrics = {"unpruned": before["metrics"], "pruned": after["metrics"]}
    if recover_steps:
        loss = recover(pruned, objective, train_features, recover_steps, recover_lr)
        after = _measure(pruned, objective, eval_features, metrics)
        result_metrics["recovered"] = after["metrics"]
    final_name = "recovered" if recover_steps else "pruned"
    drop = metric_drop(headline, before["metrics"][headline], after["metrics"][headline])
    gate = {"name": f"{headline} drop <= max_drop", "metric": headline, "before": before["metrics"][headline],
            "after": after["metrics"][headline], "drop": round(drop, 6), "max_drop": max_drop,
            "passed": drop <= max_drop}
    if not gate["passed"]:
        unit = " points" if higher_is_better(headline) else "%"
        raise ModelError(
            f"Pruning {sparsity:.0%} ({structure}) moved {headline} from {gate['before']:.4f} to {gate['after']:.4f}: "
            f"{100 * drop:.1f}{unit} worse, more than --max-drop {max_drop} ({100 * max_drop:.1f}{unit}); "
            "nothing was written.",
            "Prune less (--sparsity), recover (--recover-steps 200), or allow more (--max-drop).")

    out.mkdir(parents=True, exist_ok=True)
    pruned.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_model_meta(out, dict(meta, method="full", method_config={"type": "full"}, quantization=None,
                               pruned_from={"final_dir": str(final_dir), "sparsity": sparsity,
                                            "structure": structure}))
    return {
        "checks": [merge_check, parity, gate],
        "pruning": {"structure": structure, "requested_sparsity": sparsity, "importance": importance,
                    "recover_steps": recover_steps, "recover_lr": recover_lr if recover_steps else None,
                    "recover_final_loss": loss if recover_steps else None,
                    "intermediate_size": [layout.neurons, len(keep["ffn"][0])],
                    "attention_heads": [layout.heads, len(keep["heads"][0]) if keep["heads"] else layout.heads],
                    "parameter_sparsity": round(1 - after["params"] / before["params"], 4)},
        "eval_examples": len(eval_features),
        "metrics": result_metrics,
        "change": change(before["metrics"], after["metrics"]),
        "params": {"unpruned": before["params"], final_name: after["params"]},
        "latency_ms_per_example": {"unpruned": before["batch1"], final_name: after["batch1"]},
        "latency_ms_batch64": {"unpruned": before["batch64"], final_name: after["batch64"]},
        "size_mb": {"unpruned": _saved_mb(model), final_name: folder_mb(out)},
    }


def metric_drop(headline: str, before: float, after: float) -> float:
    """How much worse ``after`` is: points for a score, the relative rise for a loss."""
    if higher_is_better(headline):
        return before - after
    return (after - before) / max(abs(before), 1e-12)


def recover(model, objective, features: list[dict], steps: int, lr: float, seed: int = 0) -> float:
    """A short full fine-tune of the pruned model (AdamW, constant ``lr``, batches of 16 drawn
    in a seeded shuffled order); returns the mean loss of the last 10 steps."""
    if not features:
        raise ConfigError("Recovery needs the run's training rows, and none were read.",
                          "Use --recover-steps 0, or keep the run's training data where its config.yaml says.")
    generator = random.Random(seed)
    order = list(range(len(features)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    batches = itertools.chain.from_iterable(_shuffled(order, generator) for _ in itertools.count())
    for _ in range(steps):
        idx = [next(batches) for _ in range(RECOVER_BATCH)]
        batch = objective.collate([features[i] for i in idx])
        loss = objective.loss_sum(model, batch) / objective.count_targets(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return round(sum(losses[-10:]) / len(losses[-10:]), 6)


def _shuffled(order: list[int], generator: random.Random) -> list[int]:
    copy = list(order)
    generator.shuffle(copy)
    return copy


def _measure(model, objective, features: list[dict], metrics: tuple[str, ...]) -> dict:
    return {"metrics": score(objective, model, features, metrics), "params": count_parameters(model),
            "batch1": latency_ms(model, objective, features), "batch64": batch_latency_ms(model, objective, features)}


def _parity_check(model, pruned, layout, keep: dict, tokenizer, meta: dict, run_dir) -> dict:
    """The pruned model's logits must equal the unpruned model's with the same units masked."""
    batch = probe_batch(tokenizer, probe_texts(meta, tokenizer, run_dir), meta["task"], meta.get("max_length") or 512)
    with unit_masks(model, layout, *keep_masks(layout, keep)):
        masked = logits_of(model, batch)
    mask = batch["attention_mask"] if meta["task"] == "causal_lm" else None
    diff = max_abs_diff(masked, logits_of(pruned, batch), mask)
    scale = max(1.0, float(masked.abs().max()))
    check = {"name": "pruned logits = masked-model logits", "probes": int(batch["input_ids"].shape[0]),
             "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE * scale, "passed": diff <= PARITY_TOLERANCE * scale}
    if not check["passed"]:
        raise ModelError(f"The pruned model's logits differ from the masked model's by {diff:.3g} "
                         f"(allowed {check['tolerance']:.3g}); nothing was written.",
                         "Report this run (tunesmith.json) as a bug.")
    return check


def _saved_mb(model) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return folder_mb(Path(tmp))


def _training_rows(run_dir: Path) -> list[dict]:
    """The run's training rows, prepared again from its config.yaml (same split, same seed)."""
    from tunesmith.config.load import load_recipe
    from tunesmith.data.pipeline import prepare_data

    config = load_recipe(run_dir / "config.yaml")
    try:
        return prepare_data(config.data, spec_for(config).shape, config.seed, run_dir).train
    except (OSError, TunesmithError) as exc:
        raise ConfigError(f"Pruning scores units on the run's training rows, and they could not be read again: {exc}",
                          "Keep the data where config.yaml says, or use --importance magnitude --recover-steps 0."
                          ) from None
