"""report.html: what a practitioner asks of a run, on one page.

Status and a red box when eval rows leaked into training; before/after metrics; for
classifiers per-class precision/recall and the most confidently wrong examples, for chat
models held-out prompts with the reference and the generated answer; the training curves
(smoothed loss, learning rate, gradient norm, eval metric); the best checkpoint and how to
load ``final/``; the data (sources, mix, splits, label balance, truncation, leakage); guard
events; probes; the resolved config and the environment. Plots come from ``eval/plots.py``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tunesmith.data.dedup import leakage_summary
from tunesmith.eval import plots
from tunesmith.objectives.tasks import TASKS, task_spec
from tunesmith.rundir import RunDir
from tunesmith.summary import probe_text

esc = html.escape
STYLE = """body{font-family:sans-serif;max-width:64em;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f7f7f7;padding:.8em;overflow:auto}
.alert{border:2px solid #c62828;background:#fdecea;color:#7f0000;padding:.6em 1em;margin:1em 0}
img{max-width:100%}"""


def _num(value, digits: int = 1) -> str:
    """A number for people: thousands separators, fixed decimals; integers stay whole."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return esc(str(value))


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _leakage_alert(summary: dict) -> str:
    """A red box when eval rows also occur in training: every eval number above is inflated."""
    leak = (summary.get("data") or {}).get("leakage")
    if not leak or leak["exact"] + leak["near"] <= leak.get("removed", 0):
        return ""
    return (f'<div class="alert" id="leakage"><b>Leakage:</b> {esc(leakage_summary(leak))}. The eval '
            "metrics below are inflated; deduplicate the data (data.dedup) or set data.leakage: remove.</div>")


def _per_class(summary: dict) -> str:
    matrix, labels = (summary.get("confusion_matrix") or {}).get("after"), summary.get("labels")
    if not matrix or not labels:
        return ""
    rows = []
    for k, label in enumerate(labels):
        tp, predicted, actual = matrix[k][k], sum(r[k] for r in matrix), sum(matrix[k])
        precision, recall = (tp / predicted if predicted else 0.0), (tp / actual if actual else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append([esc(label), _num(precision, 3), _num(recall, 3), _num(f1, 3), _num(actual)])
    return '<h3 id="per-class">Per class (after training)</h3>' + _table(
        ["label", "precision", "recall", "F1", "eval rows"], rows, {1, 2, 3, 4})


def _worst_errors(run_dir: Path, limit: int = 10) -> str:
    # A chat run's predictions.jsonl holds generated answers (see _generation), not labels.
    wrong = [r for r in RunDir(run_dir).log("predictions") if "predicted" in r and r["predicted"] != r["label"]]
    if not wrong:
        return ""
    wrong.sort(key=lambda r: -r["probs"][r["predicted"]])
    rows = [[esc(r["text"]), esc(r["label"]), esc(r["predicted"]), _num(r["probs"][r["predicted"]], 3)]
            for r in wrong[:limit]]
    return (f'<h3 id="errors">Most confidently wrong ({len(wrong)} errors in all)</h3>'
            + _table(["text", "gold", "predicted", "confidence"], rows, {3}))


def _samples(summary: dict) -> str:
    samples = summary.get("samples") or []
    if not samples:
        return ""
    rows = [[esc(s["prompt"]), esc(s["reference"]), esc(s["generated"])] for s in samples]
    return '<h3 id="samples">Held-out prompts</h3>' + _table(["prompt", "reference", "generated"], rows)


def _evaluation(run_dir: Path, summary: dict) -> str:
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    rows = [[esc(k), _num(before.get(k), 4), _num(v, 4), _num(v - before[k], 4) if k in before else "–"]
            for k, v in after.items()]
    return ('<h2 id="evaluation">Evaluation (held-out rows)</h2>'
            + _table(["metric", "before", "after", "change"], rows, {1, 2, 3})
            + _classification(summary) + _generation(summary) + _forgetting(summary) + _scorecard(summary)
            + _per_class(summary) + _worst_errors(run_dir) + _samples(summary))


def _interval(entry: dict | None) -> str:
    ci = (entry or {}).get("ci95")
    return f"[{_num(float(ci[0]), 4)}, {_num(float(ci[1]), 4)}]" if ci and ci[0] is not None else "–"


def _generation(summary: dict) -> str:
    """Held-out answers scored before and after, each with its 95% interval, and the paired difference."""
    gen = summary.get("generation")
    if not gen:
        return ""
    rows = []
    for name, after in gen["after"].items():
        before, delta = gen["before"].get(name) or {}, (gen.get("deltas") or {}).get(name) or {}
        rows.append([esc(name), _num(before.get("value"), 4), _interval(before), _num(after.get("value"), 4),
                     _interval(after), _num(delta.get("delta"), 4), _interval({"ci95": delta.get("ci95")}),
                     _num(delta.get("p_value"), 3)])
    return (f'<h3 id="generation">Generated answers ({_num(gen["items"])} held-out prompts, '
            f'{esc(gen["decoding"]["strategy"])} decoding)</h3>'
            + _table(["metric", "before", "95% interval", "after", "95% interval", "change", "95% interval",
                      "p-value"], rows, {1, 3, 5, 7}))


def _classification(summary: dict) -> str:
    """Every classification metric before and after training, with its 95% interval."""
    scores = summary.get("classification") or {}
    if "after" not in scores:
        return ""
    before = scores.get("before") or {}
    rows = [[esc(name), _num((before.get(name) or {}).get("value"), 4), _interval(before.get(name)),
             _num(after.get("value"), 4), _interval(after)] for name, after in scores["after"].items()]
    return ('<h3 id="classification">Classification metrics (bootstrap 95% intervals)</h3>'
            + _table(["metric", "before", "95% interval", "after", "95% interval"], rows, {1, 3}))


def _forgetting(summary: dict) -> str:
    """The general questions before and after training, with a red box past the threshold."""
    report = summary.get("forgetting")
    if not report:
        return ""
    rows = [[esc(name), _num(m["before"], 4), _num(m["after"], 4), f"{100 * m['relative']:+.1f}%",
             _interval({"ci95": (report.get("deltas") or {}).get(name, {}).get("ci95")})]
            for name, m in report["metrics"].items()]
    warning = f'<div class="alert" id="forgetting-warning">{esc(report["warning"])}</div>' if report.get("warning") else ""
    excluded = report.get("excluded_seen_in_training")
    note = f" ({_num(excluded)} left out: their questions occur in the training data)" if excluded else ""
    return (f'<h3 id="forgetting">Forgetting check: {_num(report["items"])} general questions{note}</h3>' + warning
            + _table(["metric", "before", "after", "change", "95% interval of the change"], rows, {1, 2, 3}))


def _scorecard(summary: dict) -> str:
    card = summary.get("scorecard")
    if not card:
        return ""
    return '<h3 id="scorecard">Composite scorecard</h3>' + scorecard_table(card)


def scorecard_table(card: dict) -> str:
    """The composite scorecard as an HTML table (see eval/scorecard.py)."""
    pct = lambda v: "–" if v is None else f"{100 * v:+.1f}%"  # noqa: E731
    rows = [[esc(r["measures"]), _num(r["baseline"], 4), _num(r["finetuned"], 4), pct(r["change"]),
             _num(r["weight"], 2), pct(r["weighted"])] for r in card["rows"]]
    rows.append(["<b>weighted total</b>", "", "", "", "", f"<b>{pct(card['total'])}</b>"])
    return ("<p>Change is relative and signed so that positive is better; "
            "rows without a baseline do not count towards the total.</p>"
            + _table(["dimension", "baseline", "fine-tuned", "change", "weight", "weighted"], rows, {1, 2, 3, 4, 5}))


def _training(summary: dict, images: list[Path]) -> str:
    train = summary.get("train") or {}
    text = (f"{_num(train.get('steps'))} steps in {_num(train.get('wall_s'))} s; {_num(train.get('samples_per_s'))} "
            f"samples/s, {_num(train.get('tokens_per_s'), 0)} tokens/s; peak RSS {_num(train.get('peak_rss_mb'), 0)} MB"
            f"{'; peak GPU ' + _num(train.get('peak_gpu_mb'), 0) + ' MB' if train.get('peak_gpu_mb') else ''}; "
            f"peak learning rate {train.get('lr')}; {_num(train.get('rollbacks', 0))} rollbacks, "
            f"{_num(train.get('skipped_batches', 0))} skipped batches.")
    pictures = "".join(f'<img src="{p.name}" alt="{p.stem}">' for p in images)
    return f'<h2 id="training">Training</h2><p>{text}</p>{pictures}'


def _loading(run_dir: Path, summary: dict) -> str:
    best = (summary.get("train") or {}).get("best")
    best_text = "No evaluation during training, so no best checkpoint (final/ is the end of the run)."
    if best:
        path = run_dir / "checkpoints" / f"step-{best['step']}"
        where = f" (<code>{esc(str(path))}</code>)" if path.is_dir() else " (its checkpoint was pruned)"
        best_text = f"Best {esc(best['metric'])} {_num(best['value'], 4)} at step {best['step']}{where}."
    code = (f'from tunesmith.methods.saved import load_trained\n'
            f'model, tokenizer, meta = load_trained("{run_dir / "final"}")')
    return (f'<h2 id="loading">Best checkpoint and final/</h2><p>{best_text}</p>'
            f"<p>final/ holds the trained model (and a model card, README.md). Load it:</p><pre>{esc(code)}</pre>")


def _data(summary: dict) -> str:
    data = summary.get("data") or {}
    rows = [["sources", ", ".join(f"{esc(s)}: {_num(n)}" for s, n in (data.get("sources") or {}).items())]]
    if data.get("mix"):
        rows.append(["mix (rows drawn)", ", ".join(f"{esc(s)}: {_num(n)}" for s, n in data["mix"].items())])
    split = data.get("split") or {}
    rows.append(["rows", f"{_num(data.get('train_rows'))} train, {_num(data.get('eval_rows'))} eval, "
                         f"{_num(data.get('test_rows', 0))} test" + (f" (split: {esc(split['method'])})" if split else "")])
    for name, counts in (data.get("label_counts") or {}).items():
        rows.append([f"labels ({name})", ", ".join(f"{esc(k)}: {_num(v)}" for k, v in counts.items())])
    for split_name in ("train", "eval"):
        over = data.get(f"overlength_{split_name}") or {}
        if over:
            rows.append([f"longer than {over.get('max_length')} tokens ({split_name})",
                         f"{_num(over.get('rows'))} rows ({esc(str(over.get('policy')))})"])
    leak = data.get("leakage")
    if leak:
        rows.append(["leakage", esc(leakage_summary(leak))])
    if data.get("dedup"):
        rows.append(["duplicates removed", f"{_num(data['dedup']['exact_duplicates'])} exact, "
                                           f"{_num(data['dedup']['near_duplicates'])} near"])
    return '<h2 id="data">Data</h2>' + _table(["", ""], rows)


def _events(run_dir: Path) -> str:
    events = RunDir(run_dir).log("events")
    if not events:
        return '<h2 id="events">Events</h2><p>None: no skipped batches, rollbacks or early stop.</p>'
    rows = [[_num(e.get("step")), esc(e.get("event", "")),
             esc(json.dumps({k: v for k, v in e.items() if k not in ("step", "event", "sample_ids")}))] for e in events]
    return '<h2 id="events">Events</h2>' + _table(["step", "event", "details"], rows)


def _probes(summary: dict) -> str:
    rows = [[esc(p["input"]), esc(probe_text(p["before"])), esc(probe_text(p["after"]))] for p in summary.get("probes", [])]
    return '<h2 id="probes">Probes</h2>' + _table(["input", "before", "after"], rows) if rows else ""


def _config_and_environment(run_dir: Path, summary: dict) -> str:
    config = run_dir / "config.yaml"
    env = summary.get("environment") or {}
    rows = [[esc(k), esc(str(v))] for k, v in {**env.get("machine", {}), **env.get("versions", {})}.items()]
    rows += [[esc(k), esc(str(env[k]))] for k in ("started", "finished") if k in env]
    return ('<h2 id="environment">Environment</h2>' + _table(["", ""], rows)
            + f'<h2 id="config">Resolved config</h2><pre>{esc(config.read_text(encoding="utf-8")) if config.is_file() else ""}</pre>')


def write_report(run_dir: Path, summary: dict) -> Path:
    """Draw the plots and write report.html for the run in ``run_dir``."""
    headline = summary.get("headline") or (task_spec(summary["task"]).headline if summary.get("task") in TASKS
                                           else None)
    images = [p for p in (plots.plot_loss(run_dir, summary), plots.plot_optimizer(run_dir),
                          plots.plot_eval(run_dir, summary, headline), plots.plot_confusion(run_dir, summary),
                          plots.plot_rewards(run_dir)) if p]
    name = esc(summary.get("name", "run"))
    header = (f"<h1>{name}</h1><p>Status <b>{esc(summary.get('status', '?'))}</b>: task "
              f"{esc(summary.get('task', '?'))}, method {esc(summary.get('method', '?'))}, "
              f"{_num(summary.get('trainable_params', 0))} trainable of {_num(summary.get('total_params', 0))} "
              f"parameters; {_num(summary.get('total_wall_s'))} s in all.</p>")
    body = "".join([header, _leakage_alert(summary), _evaluation(run_dir, summary), _training(summary, images),
                    _loading(run_dir, summary), _data(summary), _events(run_dir), _probes(summary),
                    _config_and_environment(run_dir, summary)])
    out = run_dir / "report.html"
    out.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>{name}</title><style>{STYLE}</style>'
                   f"</head><body>{body}</body></html>", encoding="utf-8")
    return out

