"""One `tunesmith tune` trial, in its own process: train the trial's recipe, report each
periodic evaluation to the study, stop when the pruner says so, write the result.

Run by :mod:`tunesmith.tune.study` as ``python -m tunesmith.tune.worker JOB_JSON``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunesmith.errors import RunStopped
from tunesmith.storage import atomic_write_text


def run_trial(job: dict) -> dict:
    """Train the trial and return its result: status (completed, pruned, failed), values, steps."""
    import optuna

    from tunesmith.config.load import load_recipe
    from tunesmith.runner import run_recipe

    from tunesmith.tune.study import make_pruner

    study = optuna.load_study(study_name=job["study"], storage=job["storage"],
                              pruner=make_pruner(job["pruner"], job["eval_every"]))
    trial = optuna.trial.Trial(study, job["trial_id"])
    config = load_recipe(job["recipe"])
    objectives = job["objectives"]
    evaluations = [0]

    def on_evaluation(metrics: dict) -> None:
        evaluations[0] += 1
        step = evaluations[0] * config.train.eval_every
        if len(objectives) == 1 and objectives[0] in metrics:
            trial.report(metrics[objectives[0]], step)
            if trial.should_prune():
                raise RunStopped(f"pruned at step {step}")

    result: dict = {"run_dir": str(Path(config.output_dir) / config.name)}
    try:
        summary = run_recipe(config, overwrite=True, base_dir=Path(job["base_dir"]), show_progress=False,
                             log=lambda *a: print(*a, flush=True), on_evaluation=on_evaluation)
    except RunStopped:
        return {**result, "status": "pruned", "steps": evaluations[0] * config.train.eval_every}
    except Exception as exc:  # noqa: BLE001 - any failure is this trial's result, recorded, not the study's end
        return {**result, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    values = {name: summary["train"]["wall_s"] if name == "train_s" else summary["eval_after"].get(name)
              for name in objectives}
    missing = [n for n, v in values.items() if v is None]
    if missing:
        return {**result, "status": "failed", "error": f"the run has no metric {missing[0]!r} "
                f"(it has: {', '.join(sorted(summary['eval_after']))})"}
    return {**result, "status": "completed", "values": values, "steps": summary["train"]["steps"],
            "train_s": summary["train"]["wall_s"]}


def main() -> None:
    job = json.loads(sys.argv[1])
    from tunesmith import quiet

    quiet.filter_known_noise()
    result = run_trial(job)
    atomic_write_text(Path(job["result"]), json.dumps(result, indent=1))
    if "mlflow" in job.get("report_to", []):
        from tunesmith.train.tracking import tag_mlflow_run

        # The trials of a study side by side in MLflow: filter on tune.study, sort by tune.trial.
        tag_mlflow_run(Path(result["run_dir"]), {"tune.study": job["study_dir"], "tune.trial": job["number"],
                                                 "tune.state": result["status"]})


if __name__ == "__main__":
    main()
