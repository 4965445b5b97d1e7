"""`tunesmith tune`: an Optuna study whose trials are ordinary training runs.

The parent process owns the study (seeded TPE sampler, the pruner, SQLite storage in
the study directory) and asks it for each trial's settings; every trial trains in a
child process (:mod:`tunesmith.tune.worker`), so a crash or an out-of-memory kill takes
one trial down, not the study, and each trial's peak memory is its own. The child reports
each periodic evaluation to the study and stops when the pruner says so.

A study killed mid-way resumes with the same command: finished trials (complete, pruned
or failed) are kept and counted, and a trial left running by the kill is marked failed
and its settings are run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunesmith.errors import ConfigError
from tunesmith.tune.space import Param, apply_params

PRUNERS = ("median", "hyperband", "none")
INTERRUPTED = "interrupted: the study was stopped while this trial ran; its settings were run again"
STUDY_NAME = "tunesmith"


@dataclass
class Objective:
    """What a trial is scored by: metric names and their directions."""

    names: list[str]
    directions: list[str]  # "maximize" | "minimize"


def objective_of(config, names: list[str] | None) -> Objective:
    """The task's headline metric (direction from the metric registry), or the metrics named.
    ``train_s`` (training seconds) is always minimised."""
    from tunesmith.eval.metrics import higher_is_better
    from tunesmith.objectives.tasks import spec_for

    names = names or [config.train.best_metric or spec_for(config).headline]
    directions = ["minimize" if n == "train_s" else ("maximize" if higher_is_better(n) else "minimize")
                  for n in names]
    return Objective(names, directions)


def storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def make_pruner(kind: str, eval_every: int | None):
    """The study's pruner; the trials' processes build the same one to judge themselves."""
    import optuna

    if kind == "median":
        # The first two trials run whole so there is a median to compare with; each trial's
        # first evaluation is never judged (early scores are noisy).
        # (Optuna judges a step once it reaches n_warmup_steps.)
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=(eval_every or 0) + 1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(study_dir: Path, objective: Objective, pruner: str, seed: int, eval_every: int | None = None):
    """Create the study, or load it to resume; a trial left RUNNING by a killed study is failed
    and its settings queued again."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage_url(study_dir), load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed), pruner=make_pruner(pruner, eval_every),
        directions=objective.directions)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "error", INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params)
    return study


def finished_trials(study) -> int:
    """Trials that count towards --trials: complete, pruned, or failed on their own (not interrupted)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get("error") != INTERRUPTED))


def suggest(trial, params: list[Param]) -> dict:
    """The trial's settings, conditions respected (method.type first: other keys depend on it)."""
    chosen: dict = {}
    for param in sorted(params, key=lambda p: p.key != "method.type"):
        if not param.applies(chosen):
            continue
        if param.kind == "choice":
            chosen[param.key] = trial.suggest_categorical(param.key, param.values)
        elif param.kind == "int":
            chosen[param.key] = trial.suggest_int(param.key, *param.values, step=param.step or 1)
        else:
            chosen[param.key] = trial.suggest_float(param.key, *param.values, log=param.kind == "log_uniform",
                                                    step=param.step)
    return chosen


def run_study(recipe: Path, base: dict, params: list[Param], *, trials: int, study_dir: Path, objective: Objective,
              pruner: str = "median", jobs: int = 1, timeout: float | None = None, seed: int = 42,
              log=print) -> object:
    """Run trials until ``trials`` have finished (counting those of an earlier, resumed run)."""
    eval_every = (base.get("train") or {}).get("eval_every")
    study = open_study(study_dir, objective, pruner, seed, eval_every)
    done = finished_trials(study)
    if done:
        log(f"resuming the study in {study_dir}: {done} of {trials} trials finished")
    started = time.monotonic()
    running: dict[int, tuple[object, subprocess.Popen]] = {}
    while done + len(running) < trials or running:
        while done + len(running) < trials and len(running) < jobs and \
                (timeout is None or time.monotonic() - started < timeout):
            trial = study.ask()
            settings = suggest(trial, params)
            recipe_dict = apply_params(base, settings)
            recipe_dict.update(name=f"trial-{trial.number:03d}", output_dir=str(study_dir / "trials"))
            trial.set_user_attr("settings", settings)
            running[trial.number] = (trial, _launch(study_dir, trial, recipe_dict, objective, recipe, pruner,
                                                    eval_every))
            log(f"trial {trial.number}: {json.dumps(settings)}")
        if not running:
            break  # the timeout stopped new trials
        time.sleep(0.5)
        for number, (trial, process) in list(running.items()):
            if process.poll() is None:
                continue
            del running[number]
            done += 1
            _finish(study, trial, study_dir, objective, process.returncode, log)
    return study


def _launch(study_dir: Path, trial, recipe_dict: dict, objective: Objective, recipe: Path, pruner: str,
            eval_every: int | None) -> subprocess.Popen:
    folder = study_dir / "trials"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"trial-{trial.number:03d}.yaml"
    path.write_text(yaml.safe_dump(recipe_dict, sort_keys=False, allow_unicode=True), encoding="utf-8")
    job = {"recipe": str(path), "base_dir": str(recipe.resolve().parent), "storage": storage_url(study_dir),
           "study": STUDY_NAME, "trial_id": trial._trial_id, "objectives": objective.names,
           "pruner": pruner, "eval_every": eval_every, "number": trial.number, "study_dir": str(study_dir),
           "report_to": (recipe_dict.get("train") or {}).get("report_to", []),
           "result": str(folder / f"trial-{trial.number:03d}.result.json")}
    log_file = open(folder / f"trial-{trial.number:03d}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tunesmith.tune.worker", json.dumps(job)],
                            stdout=log_file, stderr=subprocess.STDOUT)


def _finish(study, trial, study_dir: Path, objective: Objective, returncode: int, log) -> None:
    from optuna.trial import TrialState

    result_file = study_dir / "trials" / f"trial-{trial.number:03d}.result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {
        "status": "failed", "error": f"the trial's process exited with code {returncode} before writing its result "
        f"(see trials/trial-{trial.number:03d}.log)"}
    for key in ("steps", "train_s", "run_dir"):
        if key in result:
            trial.set_user_attr(key, result[key])
    if result["status"] == "completed":
        values = [result["values"][n] for n in objective.names]
        study.tell(trial, values if len(values) > 1 else values[0])
        log(f"trial {trial.number}: " + ", ".join(f"{n} {v:.4g}" for n, v in zip(objective.names, values)))
    elif result["status"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        log(f"trial {trial.number}: pruned at step {result.get('steps')}")
    else:
        trial.set_user_attr("error", result.get("error"))
        study.tell(trial, state=TrialState.FAIL)
        log(f"trial {trial.number}: failed: {result.get('error')}")


def check_pruning_setup(base: dict, pruner: str) -> None:
    """Pruning needs periodic evaluations to judge a trial by."""
    if pruner != "none" and not (base.get("train") or {}).get("eval_every"):
        raise ConfigError("pruning judges trials by their periodic evaluations, and the recipe sets no "
                          "train.eval_every.", "Set train.eval_every (e.g. a sixth of the steps), or --pruner none.")
