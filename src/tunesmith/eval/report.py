"""Run report: PNG plots (loss curve, eval metrics, confusion matrix) and a short report.html."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI
import matplotlib.pyplot as plt  # noqa: E402

from tunesmith.rundir import RunDir  # noqa: E402
from tunesmith.data.dedup import leakage_summary  # noqa: E402
from tunesmith.objectives.tasks import TASKS, task_spec  # noqa: E402


def plot_loss(run_dir: Path, summary: dict) -> Path | None:
    """loss.png: training loss, and eval loss before training, at each eval step and after."""
    rows = RunDir(run_dir).log("metrics")
    if not rows:
        return None
    evals = [r for r in RunDir(run_dir).log("eval") if "eval_loss" in r]
    if "eval_loss" in (summary.get("eval_before") or {}):
        evals = [{"step": 0, "eval_loss": summary["eval_before"]["eval_loss"]}] + evals
    if "eval_loss" in (summary.get("eval_after") or {}):
        evals.append({"step": summary["train"]["steps"], "eval_loss": summary["eval_after"]["eval_loss"]})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_eval(run_dir: Path, summary: dict) -> Path | None:
    """eval.png: the headline eval metric before training, at each eval step, and after."""
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    key = task_spec(summary["task"]).headline if summary.get("task") in TASKS else None
    if key not in after:
        return None
    points = [(0, before[key])] + [(r["step"], r[key]) for r in RunDir(run_dir).log("eval") if key in r]
    points.append((summary["train"]["steps"], after[key]))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), "o-")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.set_title(f"eval {key}: {before[key]:.4f} -> {after[key]:.4f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "eval.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(run_dir: Path, summary: dict) -> Path | None:
    """confusion.png: confusion matrices before and after training (classification)."""
    matrices = summary.get("confusion_matrix") or {}
    labels = summary.get("labels")
    if not labels or not matrices.get("after"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, when in zip(axes, ("before", "after")):
        matrix = matrices[when]
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(when)
    fig.tight_layout()
    out = run_dir / "confusion.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(run_dir: Path, summary: dict) -> Path:
    """Draw the plots and write report.html summarising the run."""
    images = [p for p in (plot_loss(run_dir, summary), plot_eval(run_dir, summary), plot_confusion(run_dir, summary)) if p]
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{_fmt(summary['eval_before'].get(k))}</td><td>{_fmt(v)}</td></tr>"
        for k, v in (summary.get("eval_after") or {}).items()
    )
    train = summary.get("train", {})
    probes = "".join(
        f"<tr><td>{esc(p['input'])}</td><td>{esc(_probe(p['before']))}</td><td>{esc(_probe(p['after']))}</td></tr>"
        for p in summary.get("probes", [])
    )
    events = RunDir(run_dir).log("events")
    event_rows = "".join(
        f"<tr><td>{e.get('step')}</td><td>{esc(e.get('event', ''))}</td>"
        f"<td>{esc(json.dumps({k: v for k, v in e.items() if k not in ('step', 'event', 'sample_ids')}))}</td></tr>"
        for e in events
    )
    events_html = (
        f"<h2>Events</h2><table><tr><th>step</th><th>event</th><th>details</th></tr>{event_rows}</table>"
        if events else "<h2>Events</h2><p>None: no skipped batches, rollbacks or early stop.</p>"
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(summary.get('name', 'run'))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
.alert{{border:2px solid #c62828;background:#fdecea;color:#7f0000;padding:.6em 1em;margin:1em 0}}</style></head><body>
<h1>{esc(summary.get('name', 'run'))}</h1>
<p>Status <b>{esc(summary.get('status', '?'))}</b>: task {esc(summary.get('task', '?'))}, method {esc(summary.get('method', '?'))},
{summary.get('trainable_params', 0):,} trainable of {summary.get('total_params', 0):,} parameters.</p>
{_leakage_alert(summary)}
<h2>Evaluation</h2><table><tr><th>metric</th><th>before</th><th>after</th></tr>{rows}</table>
<h2>Training</h2><p>{train.get('steps', 0)} steps in {_fmt(train.get('wall_s'))} s,
{_fmt(train.get('samples_per_s'))} samples/s, {_fmt(train.get('tokens_per_s'))} tokens/s, peak RSS {_fmt(train.get('peak_rss_mb'))} MB.</p>
{''.join(f'<img src="{p.name}" alt="{p.stem}">' for p in images)}
{events_html}
<h2>Probes</h2><table><tr><th>input</th><th>before</th><th>after</th></tr>{probes}</table>
</body></html>"""
    out = run_dir / "report.html"
    out.write_text(body, encoding="utf-8")
    return out


def _leakage_alert(summary: dict) -> str:
    """A red box when eval rows also occur in training: every eval number above is inflated."""
    leak = (summary.get("data") or {}).get("leakage")
    if not leak or leak["exact"] + leak["near"] <= leak.get("removed", 0):
        return ""
    return (f'<div class="alert" id="leakage"><b>Leakage:</b> {html.escape(leakage_summary(leak))}. The eval '
            "metrics below are inflated; deduplicate the data (data.dedup) or set data.leakage: remove.</div>")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _probe(value) -> str:
    if isinstance(value, dict):
        return f"{value['label']} ({value['probability']:.2f})"
    return str(value)
