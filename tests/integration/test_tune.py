"""`tunesmith tune` on a tiny chat model: a pruned trial, a resume after SIGKILL, a best.yaml that trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunesmith.testing import write_chat_recipe

optuna = pytest.importorskip("optuna")

STEPS = ["--set", "train.max_steps=9", "--set", "train.eval_every=3", "--set", "eval.generate=false",
         "--set", "eval.forgetting=false"]


def tune_command(recipe: Path, study_dir: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunesmith.cli", "tune", str(recipe), "--space", str(recipe.parent / "space.yaml"),
            "--trials", str(trials), "--study-dir", str(study_dir), *STEPS, *extra]


def write_space(folder: Path, lrs: list[float]) -> None:
    (folder / "space.yaml").write_text(yaml.safe_dump({"train.lr": {"choice": lrs}}))


def test_a_bad_trial_is_pruned_and_best_yaml_trains(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    write_space(tmp_path, [2e-2, 1e-9])
    study_dir = tmp_path / "study"
    # The study's first trials are queued: two that learn, then one whose learning rate is
    # far too small to move the model; the median pruner must stop that one early.
    study_dir.mkdir()
    study = optuna.create_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}",
                                direction="minimize")  # the chat task's headline: eval_loss
    for lr in (2e-2, 2e-2, 1e-9):
        study.enqueue_trial({"train.lr": lr})
    out = subprocess.run(tune_command(recipe, study_dir, 3), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]

    trials = optuna.load_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}").trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], (states, out.stdout[-2000:])
    assert trials[2].user_attrs["steps"] == 6  # judged at its second evaluation, before its budget of 9
    first = [json.loads(line)["eval_loss"] for line in
             (study_dir / "trials" / "trial-000" / "eval.jsonl").read_text().splitlines()]
    assert trials[0].value < first[0]  # the learning trials did learn

    best = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert best["train"]["lr"] == 2e-2
    for name in ("trials.csv", "trials.md", "report.html", "history.png"):
        assert (study_dir / name).is_file(), name
    assert "optuna-dashboard" in out.stdout

    run = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(study_dir / "best.yaml"),
                          "--set", "train.max_steps=3", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["status"] == "completed"


def test_a_killed_study_resumes_without_repeating_finished_trials(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    write_space(tmp_path, [1e-3, 3e-3, 1e-2, 2e-2])
    study_dir = tmp_path / "study"
    log = open(tmp_path / "tune.log", "w")
    proc = subprocess.Popen(tune_command(recipe, study_dir, 3, "--pruner", "none"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    first = study_dir / "trials" / "trial-000.result.json"
    deadline = time.monotonic() + 600
    while not (first.is_file() and (study_dir / "trials" / "trial-001.yaml").is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "tune.log").read_text()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its running trial, mid-trial
    proc.wait()
    log.close()
    finished_at = first.stat().st_mtime_ns
    summary = (study_dir / "trials" / "trial-000" / "summary.json").read_text()

    out = subprocess.run(tune_command(recipe, study_dir, 3, "--pruner", "none"), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming the study" in out.stdout
    trials = optuna.load_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["error"].startswith("interrupted")
    assert trials[2].params == trials[1].params  # the interrupted settings ran again
    # Trial 0 was not run again: its result and run directory are untouched.
    assert first.stat().st_mtime_ns == finished_at
    assert (study_dir / "trials" / "trial-000" / "summary.json").read_text() == summary


def test_trials_are_tracked_in_tensorboard_and_mlflow(tmp_path, tiny_llama_dir):
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    write_space(tmp_path, [1e-3, 2e-2])
    study_dir = tmp_path / "study"
    out = subprocess.run(tune_command(recipe, study_dir, 2, "--pruner", "none", "--set",
                                      "train.report_to=[tensorboard, mlflow]"), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}").trials

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'trials' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    by_trial = {int(r.data.tags["tune.trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1]
    for trial in trials:
        run = by_trial[trial.number]
        assert run.data.tags["tune.study"] == str(study_dir) and run.data.tags["tune.state"] == "completed"
        assert float(run.data.params["train.lr"]) == trial.params["train.lr"]  # the sampled setting
        assert run.data.metrics["after/eval_loss"] == pytest.approx(trial.value)
        events = EventAccumulator(str(study_dir / "trials" / f"trial-{trial.number:03d}" / "tb"))
        events.Reload()
        assert [e.step for e in events.Scalars("eval/eval_loss")] == [3, 6]  # the final one is after/*
        assert events.Scalars("after/eval_loss")[0].value == pytest.approx(trial.value)


def test_a_failed_trial_is_recorded_and_two_objectives_give_a_pareto_front(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"method.type": {"choice": ["bitfit", "lora"]}}))
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    study = optuna.create_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}",
                                directions=["minimize", "minimize"])
    for method in ("bitfit", "lora"):  # BitFit cannot train a Llama (no bias terms): that trial fails
        study.enqueue_trial({"method.type": method})
    out = subprocess.run(tune_command(recipe, study_dir, 2, "--objectives", "eval_loss,train_s"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pruning is off" in out.stdout
    trials = optuna.load_study(study_name="tunesmith", storage=f"sqlite:///{study_dir / 'study.db'}").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert "BitFit found no bias terms" in trials[0].user_attrs["error"]
    assert "BitFit found no bias terms" in (study_dir / "trials.md").read_text()
    front = json.loads((study_dir / "pareto.json").read_text())
    assert [p["trial"] for p in front] == [1] and set(front[0]["values"]) == {"eval_loss", "train_s"}
    assert yaml.safe_load((study_dir / "best.yaml").read_text())["method"]["type"] == "lora"
