"""A chat run's generation checks: held-out answers and the forgetting check, before and after.

The training run calls :func:`chat_checks` on the base model and again on the trained
one, then :func:`chat_summary` turns the two into the summary's ``generation`` and
``forgetting`` sections. ``tunesmith eval`` uses the same :mod:`tunesmith.eval.generation`
functions, so a run's numbers and a later ``tunesmith eval`` of it agree.
"""

from __future__ import annotations

from tunesmith.eval.decode import DecodeSettings
from tunesmith.eval.forgetting import HEADLINE, forgetting_report, general_probe_rows
from tunesmith.eval.generation import chat_items, generation_eval, paired_deltas

# Scores copied into eval_before / eval_after (the summary's flat metric tables).
HEADLINE_SCORES = ("bleu", "chrf", "rougeL", "token_f1", "exact_match")


def decode_settings(config) -> DecodeSettings:
    """The recipe's decoding settings (eval.max_new_tokens, eval.temperature, seed)."""
    return DecodeSettings(max_new_tokens=config.eval.max_new_tokens, temperature=config.eval.temperature,
                          seed=config.seed)


def chat_checks(objective, model, config, eval_rows: list[dict], train_rows: list[dict], device) -> dict:
    """Answer the held-out chats and the general questions (as the recipe asks) and score them."""
    settings = decode_settings(config)
    checks = {}
    if config.eval.generate:
        items = chat_items(eval_rows, config.eval.max_generate_samples)
        if items:
            checks["generation"] = generation_eval(objective, model, items, settings, device)
    if config.eval.forgetting:
        rows, excluded = general_probe_rows(train_rows)
        checks["general"] = generation_eval(objective, model, chat_items(rows), settings, device)
        checks["general"]["excluded"] = excluded
        checks["general"]["languages"] = {r["id"]: r["lang"] for r in rows}
    return checks


def flat_scores(checks: dict) -> dict:
    """The headline generation numbers as plain metric -> value (general ones prefixed)."""
    flat = {}
    for name in HEADLINE_SCORES:
        if name in checks.get("generation", {}).get("metrics", {}):
            flat[name] = checks["generation"]["metrics"][name]["value"]
    for name in (HEADLINE, "perplexity"):
        if name in checks.get("general", {}).get("metrics", {}):
            flat[f"general_{name}"] = checks["general"]["metrics"][name]["value"]
    return flat


def chat_summary(before: dict, after: dict, config) -> dict:
    """The summary sections: ``generation`` (before/after with intervals and paired deltas)
    and ``forgetting`` (the general questions' change, with a warning past the threshold)."""
    out = {}
    if "generation" in after and "generation" in before:
        out["generation"] = {
            "before": before["generation"]["metrics"], "after": after["generation"]["metrics"],
            "deltas": paired_deltas(before["generation"]["predictions"], after["generation"]["predictions"],
                                    seed=config.seed),
            "items": len(after["generation"]["predictions"]), "decoding": after["generation"]["decoding"],
            "notes": after["generation"]["notes"],
        }
    if "general" in after and "general" in before:
        report = forgetting_report(before["general"]["metrics"], after["general"]["metrics"],
                                   config.eval.forgetting_threshold, after["general"].get("excluded", 0))
        report["items"] = len(after["general"]["predictions"])
        report["deltas"] = paired_deltas(before["general"]["predictions"], after["general"]["predictions"],
                                         seed=config.seed)
        out["forgetting"] = report
    return out


def prediction_rows(before: dict, after: dict) -> list[dict]:
    """predictions.jsonl of a chat run: each held-out prompt with the reference, the trained
    model's answer and the base model's, and both answers' scores."""
    if "generation" not in after:
        return []
    old = {p["id"]: p for p in before.get("generation", {}).get("predictions", [])}
    rows = []
    for p in after["generation"]["predictions"]:
        b = old.get(p["id"], {})
        rows.append({"id": p["id"], "prompt": p["prompt"], "reference": p["reference"], "prediction": p["prediction"],
                     "scores": p.get("scores"), "prediction_before": b.get("prediction"),
                     "scores_before": b.get("scores")})
    return rows
