"""Generation evaluation: answer held-out prompts, score the answers against references.

One function, :func:`generation_eval`, serves ``tunesmith eval``, a chat run's
before/after evaluation and the forgetting check, so "BLEU" means the same everywhere.
Every corpus metric comes with a bootstrap 95% interval, computed from per-example
statistics (BLEU and chrF from summed n-gram counts, as sacrebleu does; the others as
means), and two systems answering the same items can be compared with a paired
bootstrap (:func:`paired_deltas`).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.data.template import IGNORE_INDEX
from tunesmith.eval import text_metrics
from tunesmith.eval.bootstrap import bootstrap_ci, mean_aggregate, paired_bootstrap
from tunesmith.eval.decode import DecodeSettings, generate_answers

# Per-example metrics averaged over the corpus (BLEU/chrF are corpus-level, see _statistics).
MEAN_METRICS = ("rouge1", "rouge2", "rougeL", "exact_match", "token_f1")
GENERATION_METRICS = ("bleu", "chrf", *MEAN_METRICS, "perplexity", "answer_length")


def chat_items(rows: list[dict], limit: int | None = None) -> list[dict]:
    """Eval items of chat rows: the conversation up to the last answer is the prompt, the
    last answer the reference. A row ending with a user turn has no reference (its
    answer is generated and shown, but reference-based metrics skip it)."""
    items = []
    for number, row in enumerate(rows[:limit] if limit else rows):
        messages = row["messages"]
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        last = answers[-1] if answers and answers[-1] == len(messages) - 1 else None
        prompt = messages[:last] if last is not None else messages
        if not any(m["role"] == "user" for m in prompt):
            continue
        items.append({"id": str(row.get("id", number)), "messages": prompt,
                      "prompt": next(m["content"] for m in reversed(prompt) if m["role"] == "user"),
                      "reference": messages[last]["content"] if last is not None else None})
    return items


def generation_eval(objective, model, items: list[dict], settings: DecodeSettings, device="cpu",
                    resamples: int = 1000, progress=None) -> dict:
    """Answer ``items`` (from :func:`chat_items`) and score them.

    Returns ``{"metrics": {name: {"value", "ci95"}}, "predictions": [...], "notes": [...],
    "decoding": {...}}``; predictions carry id, prompt, reference, prediction, the
    per-example scores and the reference's log-likelihood (plain JSON, for
    :func:`paired_deltas` and predictions.jsonl).
    """
    prompts = [objective.prompt_ids(item["messages"])[0].tolist() for item in items]
    answers = generate_answers(model, objective.tokenizer, prompts, settings, device, progress)
    scored = [i for i, item in enumerate(items) if item["reference"] is not None]
    notes = []
    if len(scored) < len(items):
        notes.append(f"{len(items) - len(scored)} of {len(items)} items have no reference answer: "
                     "reference-based metrics skip them")
    losses = reference_losses(objective, model, [items[i] for i in scored], device) if scored else []
    loss_of = dict(zip(scored, losses))
    predictions = []
    for number, (item, answer) in enumerate(zip(items, answers)):
        row = {"id": item["id"], "prompt": item["prompt"], "reference": item["reference"],
               "prediction": answer["text"], "finish": answer["finish"], "tokens": answer["tokens"]}
        if item["reference"] is not None:
            row["scores"] = text_metrics.per_example_scores(answer["text"], item["reference"])
            row["reference_nll"], row["reference_tokens"] = (float(x) for x in loss_of[number])
        predictions.append(row)
    result = {"metrics": score_predictions(predictions, resamples, settings.seed), "predictions": predictions,
              "notes": notes, "decoding": settings.describe()}
    if not scored:
        notes.append("no item has a reference answer: only the answers are reported")
    return result


def score_predictions(predictions: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Corpus metrics with bootstrap 95% intervals from scored predictions (as written to
    predictions.jsonl, so saved predictions can be re-scored without the model)."""
    scored = [p for p in predictions if p.get("scores") is not None]
    metrics = {}
    if scored:
        for name, (values, aggregate) in _statistics(scored).items():
            low, high = bootstrap_ci(values, aggregate, resamples=resamples, seed=seed)
            metrics[name] = {"value": aggregate(values.sum(0), len(values)), "ci95": [low, high]}
    if scored:
        # Words for English answers, characters for Chinese ones (text_metrics.answer_length).
        lengths = np.array([p["scores"]["length"] for p in scored], dtype=float)
        low, high = bootstrap_ci(lengths, resamples=resamples, seed=seed)
        metrics["answer_length"] = {"value": float(lengths.mean()), "ci95": [low, high]}
    return metrics


def paired_deltas(baseline: list[dict], candidate: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Per metric: candidate minus baseline on the same items (scored predictions of each),
    with the paired-bootstrap 95% interval and p-value. Empty when the items differ."""
    a = [p for p in baseline if p.get("scores") is not None]
    b = [p for p in candidate if p.get("scores") is not None]
    if not a or [p["id"] for p in a] != [p["id"] for p in b]:
        return {}
    stats_a, stats_b = _statistics(a), _statistics(b)
    return {name: paired_bootstrap(values, stats_b[name][0], aggregate, resamples=resamples, seed=seed)
            for name, (values, aggregate) in stats_a.items()}


@torch.inference_mode()
def reference_losses(objective, model, items: list[dict], device, batch_size: int = 8) -> np.ndarray:
    """Per item: (summed negative log-likelihood of the reference answer's tokens, token
    count), rendered with the training template and system prompt (n x 2). An answer the
    length limit truncated away entirely counts (0, 0)."""
    out = np.zeros((len(items), 2))
    model.eval()
    # Loss on the reference only (even when training also learns earlier answers of a chat),
    # one padded row per item (not padding-free training rows).
    objective = copy.copy(objective)
    objective.last_turn_only, objective.overlength, objective.padding_free = True, "truncate", False
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        features = [objective.encode([{"messages": item["messages"] + [
            {"role": "assistant", "content": item["reference"]}]}]) for item in chunk]
        kept = [(start + k, f[0]) for k, f in enumerate(features) if f]
        if not kept:
            continue
        batch = objective.collate([f for _, f in kept])
        ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
        # Prompt tuning prepends virtual tokens: keep the logits of the real ones.
        logits = logits[:, -ids.shape[1] :][:, :-1]
        targets = labels[:, 1:]
        answer = targets != IGNORE_INDEX
        # Softmax over the answer positions only: prompts are most of a chat's tokens.
        nll = torch.zeros(targets.shape, device=logits.device)
        nll[answer] = F.cross_entropy(logits[answer].float(), targets[answer], reduction="none")
        for row, (index, _) in enumerate(kept):
            out[index] = (float(nll[row].sum()), int(answer[row].sum()))
    return out


def _statistics(predictions: list[dict]) -> dict:
    """name -> (per-example statistics, aggregate(summed statistics, n) -> metric value)."""
    preds = [p["prediction"] for p in predictions]
    refs = [p["reference"] for p in predictions]
    stats = {
        "bleu": (text_metrics.bleu_stats(preds, refs), lambda s, n: text_metrics.bleu_from_stats(s)),
        "chrf": (text_metrics.chrf_stats(preds, refs), lambda s, n: text_metrics.chrf_from_stats(s)),
    }
    for name in MEAN_METRICS:
        stats[name] = (np.array([[p["scores"][name]] for p in predictions], dtype=float), mean_aggregate)
    losses = np.array([[p["reference_nll"], p["reference_tokens"]] for p in predictions], dtype=float)
    stats["perplexity"] = (losses, lambda s, n: _perplexity(s[0], s[1]))
    return stats


def _perplexity(loss_sum: float, tokens: float) -> float:
    if tokens <= 0:
        return float("nan")
    mean = loss_sum / tokens
    return math.exp(mean) if mean < 700 else float("inf")
