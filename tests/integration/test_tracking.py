"""train.report_to: TensorBoard and MLflow receive the run's params, per-step and eval
metrics, before/after scores, tags and artifacts -- read back with their own readers."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.cli import main


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_bert_dir):
    from tunesmith.testing import write_cls_recipe

    recipe = write_cls_recipe(tmp_path_factory.mktemp("tracked"), tiny_bert_dir)
    args = ["train", str(recipe), "--set", "train.max_steps=6", "--set", "train.log_every=1", "--set",
            "train.eval_every=3", "--set", "train.report_to=[tensorboard,mlflow]", "--set", "train.report_model=true"]
    assert main(args) == 0
    return recipe.parent / "runs" / "tiny-cls"


def test_tensorboard_holds_every_logged_number_at_its_step(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tb"))
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    logged = {r["step"]: r["loss"] for r in _lines(tracked_run / "metrics.jsonl")}
    assert sorted(losses) == sorted(logged) == [1, 2, 3, 4, 5, 6]
    assert all(losses[s] == pytest.approx(logged[s], rel=1e-6) for s in logged)
    evals = {r["step"]: r["accuracy"] for r in _lines(tracked_run / "eval.jsonl")}
    assert {e.step: pytest.approx(e.value) for e in events.Scalars("eval/accuracy")} == evals
    summary = json.loads((tracked_run / "summary.json").read_text())
    assert events.Scalars("after/accuracy")[0].value == pytest.approx(summary["eval_after"]["accuracy"])
    assert "recipe/text_summary" in events.Tags()["tensors"]


def test_mlflow_holds_params_metrics_tags_and_artifacts(tracked_run):
    import mlflow

    record = json.loads((tracked_run / "tracking.json").read_text())
    assert record["tracking_uri"] == f"sqlite:///{(tracked_run.parent / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(record["tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    config = yaml.safe_load((tracked_run / "config.yaml").read_text())
    assert run.data.params["train.max_steps"] == "6" and run.data.params["method.type"] == config["method"]["type"]
    assert run.data.tags["task"] == "classification" and run.data.tags["method"] == config["method"]["type"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-cls"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    logged = {r["step"]: r["loss"] for r in _lines(tracked_run / "metrics.jsonl")}
    assert history == pytest.approx(logged, rel=1e-6)
    summary = json.loads((tracked_run / "summary.json").read_text())
    assert run.data.metrics["before/accuracy"] == pytest.approx(summary["eval_before"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "summary.json", "config.yaml", "final"} <= artifacts
    assert "final/model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "final")}


def test_report_to_rejects_an_unknown_tracker(tmp_path, tiny_bert_dir, capsys):
    from tunesmith.testing import write_cls_recipe

    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    assert main(["train", str(recipe), "--set", "train.report_to=[wandb]"]) == 2
    assert "train.report_to" in capsys.readouterr().err


def test_a_rewound_run_replaces_its_tensorboard_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunesmith.train.tracking import Trackers, _TensorBoard

    trackers = Trackers([_TensorBoard(tmp_path, "run", {"train.lr": "0.1"}, {"task": "sft"}, resumed=False)])
    for step in range(1, 6):
        trackers.log("metrics", {"step": step, "loss": float(step)})
    trackers.rewind(3)  # a rollback (or a resume) to step 3: steps 4 and 5 are trained again
    for step in (4, 5):
        trackers.log("metrics", {"step": step, "loss": 10.0 * step})
    trackers.finish({"status": "completed"}, tmp_path)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0),
                                                                         (5, 50.0)]
