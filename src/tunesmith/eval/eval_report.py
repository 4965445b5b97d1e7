"""report.html of ``tunesmith eval``: the numbers with their intervals, the comparison, the examples.

Generation: a metric table (value and 95% interval, the second model's, the difference
with its interval and p-value), then prompts with reference and answers. Classification:
the same table, per-class scores, the confusion matrix, the reliability diagram and the
most frequent confusions with example texts. Reward models: the table, the reward
distributions and the pairs with their rewards and margins.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.eval.report import STYLE, _num, _table, esc

PERCENT_SCALE = {"bleu", "chrf"}  # 0-100 scale (sacrebleu's); the rest are 0-1


def _value(entry: dict | None, name: str) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    digits = 2 if name in PERCENT_SCALE or name in ("perplexity", "answer_length") else 4
    return _num(float(entry["value"]), digits)


def _interval(entry: dict | None, name: str) -> str:
    ci = (entry or {}).get("ci95")
    if not ci or ci[0] is None:
        return "–"
    digits = 2 if name in PERCENT_SCALE or name in ("perplexity", "answer_length") else 4
    return f"[{_num(float(ci[0]), digits)}, {_num(float(ci[1]), digits)}]"


def metric_table(result: dict) -> str:
    """Metric, value [95% CI], and with a second model its value and the paired difference."""
    theirs, deltas = result.get("against_metrics"), result.get("deltas") or {}
    header = ["metric", "value", "95% interval"]
    if theirs is not None:
        header += [f"against: {result['against']}", "difference", "95% interval", "p-value"]
    rows = []
    for name, entry in result["metrics"].items():
        row = [esc(name), _value(entry, name), _interval(entry, name)]
        if theirs is not None:
            delta = deltas.get(name) or {}
            change = {"value": delta.get("delta"), "ci95": delta.get("ci95")}
            p = delta.get("p_value")
            row += [_value(theirs.get(name), name), _value(change, name), _interval(change, name),
                    "–" if p is None else (f"&lt;{2 / delta.get('resamples', 1000):.3g}" if p == 0 else f"{p:.3f}")]
        rows.append(row)
    return _table(header, rows, {1, 3, 4, 6} if theirs is not None else {1})


def _answers(own: dict, theirs: dict | None, limit: int = 30) -> str:
    other = {p["id"]: p for p in (theirs or {}).get("predictions", [])}
    rows = []
    for p in own["predictions"][:limit]:
        row = [esc(p["prompt"]), esc(p.get("reference") or "–"), esc(p["prediction"] or "(empty)")]
        if theirs is not None:
            row.append(esc(other.get(p["id"], {}).get("prediction") or "(empty)"))
        scores = p.get("scores") or {}
        row.append(_num(scores.get("chrf"), 1) if scores else "–")
        rows.append(row)
    header = ["prompt", "reference", "answer"] + (["against"] if theirs is not None else []) + ["chrF"]
    return f'<h2 id="answers">Answers (first {min(limit, len(own["predictions"]))})</h2>' + _table(header, rows)


def _classification(out: Path, own: dict) -> str:
    parts = []
    per_class = own.get("per_class") or {}
    if per_class:
        rows = [[esc(label), _num(c["precision"], 3), _num(c["recall"], 3), _num(c["f1"], 3), _num(c["support"])]
                for label, c in per_class.items()]
        parts.append('<h2 id="per-class">Per class</h2>' + _table(["label", "precision", "recall", "F1", "rows"],
                                                                  rows, {1, 2, 3, 4}))
    matrix, labels = own.get("confusion_matrix"), own.get("labels")
    if matrix and labels:
        rows = [[esc(labels[g])] + [_num(v) for v in line] for g, line in enumerate(matrix)]
        parts.append('<h2 id="confusion">Confusion matrix (rows gold, columns predicted)</h2>'
                     + _table(["gold \\ predicted"] + [esc(x) for x in labels], rows, set(range(1, len(labels) + 1))))
    if (out / "reliability.png").is_file():
        parts.append('<h2 id="calibration">Calibration</h2>'
                     f'<p>Expected calibration error {_num(own["metrics"].get("ece", {}).get("value"), 4)} '
                     '(10 confidence bins; 0 is perfectly calibrated).</p><img src="reliability.png" alt="reliability">')
    confusions = own.get("top_confusions") or []
    if confusions:
        rows = [[esc(c["gold"]), esc(c["predicted"]), _num(c["count"]), "<br>".join(esc(t) for t in c["examples"])]
                for c in confusions]
        parts.append('<h2 id="confusions">Most frequent confusions</h2>'
                     + _table(["gold", "predicted", "rows", "examples"], rows, {2}))
    return "".join(parts)


def _pairs(out: Path, own: dict, theirs: dict | None, limit: int = 30) -> str:
    """A reward model's pairs: both rewards and the margin (and the second model's margin)."""
    parts = []
    if (out / "rewards.png").is_file():
        parts.append('<h2 id="rewards">Reward distributions</h2><p>Chosen and rejected rewards should lie apart; '
                     'pairs below the line are ranked the wrong way.</p><img src="rewards.png" alt="rewards">')
    other = {p["id"]: p for p in (theirs or {}).get("predictions", [])}
    rows = []
    for p in own["predictions"][:limit]:
        row = [esc(p["prompt"]), esc(p["chosen"]), esc(p["rejected"]), _num(p["reward_chosen"], 3),
               _num(p["reward_rejected"], 3), _num(p["margin"], 3)]
        if theirs is not None:
            row.append(_num(other.get(p["id"], {}).get("margin"), 3))
        rows.append(row)
    header = ["prompt", "chosen", "rejected", "reward (chosen)", "reward (rejected)", "margin"] + \
        (["margin (against)"] if theirs is not None else [])
    parts.append(f'<h2 id="pairs">Pairs (first {min(limit, len(own["predictions"]))})</h2>'
                 + _table(header, rows, set(range(3, len(header)))))
    return "".join(parts)


def write_eval_report(out: Path, result: dict, own: dict, theirs: dict | None) -> Path:
    """Write ``out/report.html`` for a ``tunesmith eval`` result."""
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.get("notes") or [])
    decoding = result.get("decoding")
    body = [f"<h1>Evaluation of {esc(result['target'])}</h1>",
            f"<p>{_num(result['rows'])} rows from {esc(result['data'])}"
            + (f"; {_num(result['rejected_rows'])} invalid rows left out (rejects.jsonl)" if result["rejected_rows"]
               else "") + ". Intervals: bootstrap 95% (1,000 resamples); differences: paired bootstrap.</p>",
            f"<ul>{notes}</ul>" if notes else "",
            '<h2 id="metrics">Metrics</h2>', metric_table(result)]
    if result.get("scorecard"):
        from tunesmith.eval.report import scorecard_table

        body.append('<h2 id="scorecard">Composite scorecard</h2>' + scorecard_table(result["scorecard"]))
    if decoding:
        body.append("<p>Decoding: " + esc(", ".join(f"{k} {v}" for k, v in decoding.items())) + "</p>")
    if result["task"] == "classification":
        body.append(_classification(out, own))
    elif result["task"] == "reward":
        body.append(_pairs(out, own, theirs))
    else:
        body.append(_answers(own, theirs))
    path = out / "report.html"
    path.write_text(f"<!doctype html><meta charset=utf-8><title>Evaluation: {esc(result['target'])}</title>"
                    f"<style>{STYLE}</style>" + "".join(body), encoding="utf-8")
    return path
