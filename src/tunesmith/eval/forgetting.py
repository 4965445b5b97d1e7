"""The forgetting check: does fine-tuning cost the model its general ability?

The guides' "catastrophic forgetting": a model tuned hard on one domain answers ordinary
questions worse afterwards. The package ships 100 general-knowledge questions with
reference answers (60 English, 40 Chinese; ``assets/general_probes.jsonl``, built by
``scripts/build_general_probes.py`` and held out of every builtin chat dataset). A chat run
answers them before and after training; the deltas go into the summary and the report,
and a drop beyond ``eval.forgetting_threshold`` prints a warning that points at data
mixing (the guides suggest domain : general = 1:5 to 1:10).
"""

from __future__ import annotations

from tunesmith.data.builtins import general_probes_path
from tunesmith.data.validate import load_file

# The scores compared before/after; chrF is the headline (it works at the character level,
# so English and Chinese answers are measured alike).
HEADLINE = "chrf"
TRACKED = ("chrf", "token_f1", "rougeL", "perplexity")


def general_probe_rows(train_rows: list[dict] | None = None) -> tuple[list[dict], int]:
    """The packaged general questions, minus any whose question occurs in ``train_rows``
    (a user's data may contain them): returns ``(rows, excluded)``."""
    path = general_probes_path()
    rows, _ = load_file(path, str(path), "chat", keep_fields=("id", "lang"))
    seen = {_normal(m["content"]) for r in train_rows or [] for m in r.get("messages", []) if m["role"] == "user"}
    kept = [r for r in rows if _normal(r["messages"][0]["content"]) not in seen]
    return kept, len(rows) - len(kept)


def forgetting_report(before: dict, after: dict, threshold: float, excluded: int = 0) -> dict:
    """Before/after general scores, their changes, and a warning when one fell by more than
    ``threshold`` (relative: 0.1 = 10% worse; for perplexity, 10% higher)."""
    rows, worse = {}, []
    for name in TRACKED:
        if name not in before or name not in after:
            continue
        b, a = before[name]["value"], after[name]["value"]
        change = (a - b) / abs(b) if b else 0.0
        rows[name] = {"before": b, "after": a, "delta": a - b, "relative": change}
        if (change > threshold) if name == "perplexity" else (change < -threshold):
            worse.append(f"{name} {b:.3g} -> {a:.3g} ({100 * change:+.0f}%)")
    report = {"metrics": rows, "threshold": threshold, "items": after.get("_items"), "excluded_seen_in_training": excluded}
    if worse:
        report["warning"] = (
            f"general ability dropped by more than {100 * threshold:.0f}% on the packaged general questions: "
            + ", ".join(worse) + ". Mix general chat into the training data (data.train with weights, "
            "e.g. builtin:chatterbot-en; the guides suggest domain : general = 1:5 to 1:10)."
        )
    return report


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
