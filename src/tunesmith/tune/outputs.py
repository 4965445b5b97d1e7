"""What a finished `tunesmith tune` study leaves in its directory.

- ``trials.csv`` / ``trials.md``: every trial with its settings, state, values, steps, error;
- ``best.yaml``: the base recipe with the best trial's settings, runnable as is (with
  several objectives, ``pareto.json`` lists the Pareto front and best.yaml is its first);
- ``history.png``, ``importances.png``, ``parallel.png``: Optuna's plots;
- ``report.html``: the table and the plots on one page;
- the command that opens the study in ``optuna-dashboard``.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import yaml

from tunesmith.storage import atomic_write_text
from tunesmith.tune.space import apply_params


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, values, steps, settings, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "values": t.values, "steps": t.user_attrs.get("steps"),
                     "train_s": t.user_attrs.get("train_s"), "settings": t.user_attrs.get("settings", t.params),
                     "error": t.user_attrs.get("error")})
    return rows


def best_trials(study) -> list:
    """The best trial (one objective) or the Pareto front (several); empty when none completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def write_outputs(study, study_dir: Path, base: dict, objective_names: list[str]) -> dict:
    """Write the table, best.yaml, the plots and report.html; returns what was written."""
    rows = trial_rows(study)
    with open(study_dir / "trials.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["trial", "state", *objective_names, "steps", "train_s", "settings", "error"])
        for r in rows:
            values = r["values"] or [None] * len(objective_names)
            writer.writerow([r["trial"], r["state"], *values, r["steps"], r["train_s"], json.dumps(r["settings"]),
                             r["error"] or ""])
    table = markdown_table(rows, objective_names)
    atomic_write_text(study_dir / "trials.md", table + "\n")
    written = {"trials": str(study_dir / "trials.csv")}
    best = best_trials(study)
    if best:
        recipe = apply_params(base, best[0].user_attrs.get("settings", best[0].params))
        recipe["name"] = f"{base['name']}-best"
        atomic_write_text(study_dir / "best.yaml", yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        written["best"] = str(study_dir / "best.yaml")
        if len(study.directions) > 1:
            front = [{"trial": t.number, "values": dict(zip(objective_names, t.values)),
                      "settings": t.user_attrs.get("settings", t.params)} for t in best]
            atomic_write_text(study_dir / "pareto.json", json.dumps(front, indent=1))
            written["pareto"] = str(study_dir / "pareto.json")
    written["plots"] = write_plots(study, study_dir, objective_names)
    atomic_write_text(study_dir / "report.html", report_html(table, written["plots"], best, objective_names,
                                                             study_dir))
    written["report"] = str(study_dir / "report.html")
    return written


def markdown_table(rows: list[dict], objective_names: list[str]) -> str:
    """The trials as a Markdown table."""
    head = ["trial", "state", *objective_names, "steps", "settings"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [f"{v:.4g}" if v is not None else "" for v in (r["values"] or [None] * len(objective_names))]
        settings = ", ".join(f"{k}={_short(v)}" for k, v in (r["settings"] or {}).items())
        state = r["state"] + (f" ({r['error'][:60]})" if r["error"] else "")
        lines.append(f"| {r['trial']} | {state} | " + " | ".join(values) + f" | {r['steps'] or ''} | {settings} |")
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_plots(study, study_dir: Path, objective_names: list[str]) -> list[str]:
    """Optimisation history, parameter importances and parallel coordinates as PNGs (those
    Optuna can draw: importances need two completed trials with different settings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    target = (lambda t: t.values[0]) if len(objective_names) > 1 else None
    name = objective_names[0]
    plots = [("history.png", lambda: oplt.plot_optimization_history(study, target=target, target_name=name))]
    if len(complete) >= 2 and study.trials[0].params:
        plots.append(("importances.png", lambda: oplt.plot_param_importances(study, target=target, target_name=name)))
        plots.append(("parallel.png", lambda: oplt.plot_parallel_coordinate(study, target=target, target_name=name)))
    written = []
    for filename, draw in plots:
        try:
            axes = draw()
        except (ValueError, RuntimeError) as exc:  # e.g. importances when every trial has the same settings
            print(f"tune: {filename} not drawn: {exc}")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(study_dir / filename, dpi=110)
        plt.close(figure)
        written.append(filename)
    return written


def dashboard_command(study_dir: Path) -> str:
    """How to browse the study interactively."""
    return f"pip install optuna-dashboard && optuna-dashboard sqlite:///{(study_dir / 'study.db').resolve()}"


def report_html(table: str, plots: list[str], best: list, objective_names: list[str], study_dir: Path) -> str:
    """One page: the best trial, the plots and the trials table."""
    best_line = ("no trial completed" if not best else
                 f"best: trial {best[0].number}, " + ", ".join(f"{n} {v:.4g}" for n, v in zip(objective_names,
                                                                                              best[0].values)))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
                   + "</tr>" for line in table.splitlines()[2:])
    header = "".join(f"<th>{html.escape(c.strip())}</th>" for c in table.splitlines()[0].strip("|").split("|"))
    images = "".join(f'<p><img src="{p}" alt="{p}" style="max-width:100%"></p>' for p in plots)
    return (f"<!doctype html><meta charset='utf-8'><title>tunesmith tune</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px}}"
            f"table{{border-collapse:collapse}}</style><h1>Hyperparameter search</h1><p>{html.escape(best_line)}</p>"
            f"<p>best.yaml trains the best settings: <code>tunesmith train {html.escape(str(study_dir / 'best.yaml'))}"
            f"</code></p>{images}<table><tr>{header}</tr>{rows}</table>"
            f"<p>Browse the study: <code>{html.escape(dashboard_command(study_dir))}</code></p>")
