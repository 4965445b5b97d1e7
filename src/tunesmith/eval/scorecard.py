"""The composite scorecard: several dimensions, one weighted verdict.

The guides judge a fine-tune on more than its task metric: training time, peak memory,
out-of-domain ability and human preference count too, each with a weight. Each row holds
the baseline's and the fine-tuned model's value; the relative change is signed so that
positive is better (a shorter time and a lower memory peak are improvements); the
weighted total is the weight-averaged relative change over the rows that have both
values. Weights come from ``eval.scorecard`` (missing dimensions weigh 0 when any weight
is given; with none given, every measured dimension weighs the same).
"""

from __future__ import annotations

from tunesmith.config.schema import SCORECARD_DIMENSIONS
from tunesmith.eval.metrics import higher_is_better

# dimension -> (what it measures, higher is better)
DIMENSIONS = {
    "task": ("the task's headline metric", True),
    "ood": ("general questions (chrF): out-of-domain ability", True),
    "time": ("training wall time (s)", False),
    "memory": ("peak memory (MB)", False),
    "human": ("blind human review: mean rating 1-5", True),
}
assert tuple(DIMENSIONS) == SCORECARD_DIMENSIONS


def build_scorecard(values: dict[str, tuple[float | None, float | None]], weights: dict[str, float] | None = None,
                    labels: dict[str, str] | None = None, task_higher_is_better: bool = True) -> dict:
    """The scorecard of ``values`` (dimension -> (baseline, fine-tuned)).

    Returns ``{"rows": [{dimension, measures, baseline, finetuned, change, weight,
    weighted}], "total"}``; ``change`` is relative and signed (positive = better), None
    where a value is missing (such rows do not count towards the total).
    """
    weights = weights or {}
    rows, total, weight_sum = [], 0.0, 0.0
    for name, (what, higher) in DIMENSIONS.items():
        if name not in values:
            continue
        baseline, finetuned = values[name]
        if name == "task":
            higher = task_higher_is_better  # e.g. eval_loss: lower is better
        weight = weights.get(name, 0.0) if weights else 1.0
        change = None
        if baseline is not None and finetuned is not None and baseline != 0:
            change = (finetuned - baseline) / abs(baseline) * (1 if higher else -1)
        weighted = weight * change if change is not None else None
        if weighted is not None:
            total += weighted
            weight_sum += weight
        rows.append({"dimension": name, "measures": (labels or {}).get(name, what), "baseline": baseline,
                     "finetuned": finetuned, "change": change, "weight": weight, "weighted": weighted})
    return {"rows": rows, "total": total / weight_sum if weight_sum else None}


def run_scorecard(summary: dict, weights: dict[str, float], headline: str, human: dict | None = None) -> dict:
    """A run's scorecard: base model (before) vs the trained model (after).

    Training time and peak memory have no "before" in a single run; they are shown, and
    count once a baseline run is given (``tunesmith eval RUN --against OTHER_RUN``).
    """
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    train = summary.get("train") or {}
    values = {"task": (before.get(headline), after.get(headline))}
    if "general_chrf" in after:
        values["ood"] = (before.get("general_chrf"), after["general_chrf"])
    values["time"] = (None, train.get("wall_s"))
    values["memory"] = (None, train.get("peak_gpu_mb") or train.get("peak_rss_mb"))
    if human:
        values["human"] = human_scores(human)
    return build_scorecard(values, weights, {"task": f"the task's headline metric ({headline})"},
                           higher_is_better(headline))


def human_scores(review: dict) -> tuple[float | None, float | None]:
    """(system A's, system B's) mean rating over the rated dimensions of a review report
    (``tunesmith eval review-import``; A is the first model of the export, the baseline)."""
    means = []
    for system in ("A", "B"):
        ratings = ((review.get("systems") or {}).get(system) or {}).get("ratings") or {}
        values = [r["mean"] for r in ratings.values() if r.get("mean") is not None]
        means.append(sum(values) / len(values) if values else None)
    return means[0], means[1]


def format_scorecard(card: dict) -> str:
    """The scorecard as a Markdown table (the guides' composite evaluation table)."""
    def num(v, pct=False):
        if v is None:
            return "–"
        return f"{100 * v:+.1f}%" if pct else f"{v:,.4g}"

    lines = ["| dimension | baseline | fine-tuned | change | weight | weighted |", "|---|---:|---:|---:|---:|---:|"]
    for r in card["rows"]:
        lines.append(f"| {r['measures']} | {num(r['baseline'])} | {num(r['finetuned'])} | {num(r['change'], True)} "
                     f"| {r['weight']:.2g} | {num(r['weighted'], True)} |")
    lines.append(f"| **weighted total** | | | | | **{num(card['total'], True)}** |")
    return "\n".join(lines)


def eval_scorecard(result: dict, target_summary: dict, against_summary: dict | None, weights: dict[str, float],
                   human: dict | None = None) -> dict | None:
    """The scorecard of ``tunesmith eval TARGET --against OTHER``: the task's headline metric
    from the two evaluations; general questions from the target run's forgetting check when
    OTHER is its base; training time and memory when both are runs; human ratings from a
    ``review-import`` report (A = baseline, B = target)."""
    theirs = result.get("against_metrics")
    if theirs is None:
        return None
    headline = "accuracy" if result["task"] == "classification" else "chrf"
    values = {"task": (theirs.get(headline, {}).get("value"), result["metrics"].get(headline, {}).get("value"))}
    general = (target_summary.get("forgetting") or {}).get("metrics", {}).get("chrf")
    if general and str(result.get("against", "")).startswith("base ("):
        values["ood"] = (general["before"], general["after"])
    if against_summary is not None:
        mine, other = target_summary.get("train") or {}, against_summary.get("train") or {}
        values["time"] = (other.get("wall_s"), mine.get("wall_s"))
        values["memory"] = (other.get("peak_gpu_mb") or other.get("peak_rss_mb"),
                            mine.get("peak_gpu_mb") or mine.get("peak_rss_mb"))
    if human:
        values["human"] = human_scores(human)
    return build_scorecard(values, weights, {"task": f"the task's headline metric ({headline})"})
