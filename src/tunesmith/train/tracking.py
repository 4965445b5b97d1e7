"""Experiment tracking: the run's logs mirrored live to TensorBoard and MLflow.

``train.report_to: [tensorboard, mlflow]``. The run directory stays the record; trackers
receive a copy of what the logbook writes, as it is written: every metrics.jsonl line as
``train/<name>`` and every eval.jsonl line as ``eval/<name>`` at its step. At the start
they get the flattened recipe (params) and tags (task, method, model); at the end the
before/after scores (``before/<metric>``, ``after/<metric>``), the status, and (MLflow)
``report.html``, ``summary.json``, ``config.yaml`` and, with ``train.report_model``,
``final/``.

- TensorBoard: ``<run>/tb/``. A resumed or rolled-back run purges the steps after the
  step it went back to, so the curves do not double back.
- MLflow: ``sqlite:///<runs folder>/mlflow.db`` with artifacts in ``<runs folder>/mlartifacts``
  (MLflow 3 keeps its file store in maintenance), experiment "tunesmith", one MLflow run
  per Tunesmith run; a resumed run continues the same MLflow run (its id is kept in
  ``<run>/tracking.json``). ``MLFLOW_TRACKING_URI`` points it elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.rundir import TRACKED_ARTIFACTS, TRACKING

EXPERIMENT = "tunesmith"
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on one param's value


def flatten(value, prefix: str = "") -> dict[str, str]:
    """A nested recipe as ``{"train.lr": "0.0002", ...}``; lists of scalars stay one value."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return {prefix.rstrip("."): text[:PARAM_VALUE_LIMIT]}


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a log record (bools and the step itself left out)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Trackers:
    """The trackers a run logs to (none when ``report_to`` is empty)."""

    def __init__(self, sinks: list):
        self.sinks = sinks
        self.finished = False

    def log(self, name: str, record: dict) -> None:
        """A logbook line: ``name`` is "metrics" or "eval" (events are not mirrored)."""
        if name in ("metrics", "eval") and self.sinks:
            prefix = "train" if name == "metrics" else "eval"
            values = {f"{prefix}/{k}": v for k, v in numbers(record).items()}
            for sink in self.sinks:
                sink.log_metrics(values, int(record.get("step", 0)))

    def rewind(self, step: int) -> None:
        """The run went back to ``step`` (a resume or a rollback): steps after it are logged again."""
        for sink in self.sinks:
            sink.rewind(step)

    def finish(self, summary: dict, run_dir: Path, final_dir: Path | None = None) -> None:
        """Before/after scores, the status and the artifacts; then close. Once only."""
        if self.finished:
            return
        self.finished = True
        step = int(summary.get("train", {}).get("steps") or 0)
        values = {}
        for when in ("before", "after"):
            values.update({f"{when}/{k}": v for k, v in numbers(summary.get(f"eval_{when}") or {}).items()})
        for sink in self.sinks:
            sink.log_metrics(values, step)
            sink.finish(summary.get("status", "completed"), run_dir, final_dir)


def open_trackers(config, run_dir: Path, resumed: bool = False) -> Trackers:
    """The trackers ``config.train.report_to`` names, started for the run at ``run_dir``.

    Raises:
        ConfigError: a tracker's package is not installed.
    """
    sinks = []
    tags = {"task": config.task, "method": config.method.type, "model": config.model.name,
            "precision": config.train.precision}
    params = flatten(config.model_dump(mode="json"))
    for name in config.train.report_to:
        sinks.append((_TensorBoard if name == "tensorboard" else _Mlflow)(run_dir, config.name, params, tags,
                                                                           resumed))
    return Trackers(sinks)


def _missing(package: str) -> ConfigError:
    return ConfigError(f"train.report_to names {package.split('-')[0]}, but the '{package}' package is not "
                       "installed.", "pip install 'tunesmith[tracking]'")


class _TensorBoard:
    def __init__(self, run_dir: Path, name: str, params: dict, tags: dict, resumed: bool):
        try:
            import tensorboard  # noqa: F401 (torch's SummaryWriter needs it)
        except ImportError:
            raise _missing("tensorboard") from None
        self.folder = run_dir / "tb"
        self.writer = self._writer(None)
        if not resumed:
            self.writer.add_text("recipe", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)
            self.writer.add_text("tags", "  \n".join(f"{k}: {v}" for k, v in tags.items()), 0)

    def _writer(self, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.folder), purge_step=purge_step)

    def rewind(self, step: int) -> None:
        # TensorBoard drops the events after purge_step when the next one is written.
        self.writer.close()
        self.writer = self._writer(step + 1)

    def log_metrics(self, values: dict, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, status: str, run_dir: Path, final_dir: Path | None) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class _Mlflow:
    def __init__(self, run_dir: Path, name: str, params: dict, tags: dict, resumed: bool):
        try:
            import mlflow
        except ImportError:
            raise _missing("mlflow-skinny") from None
        workspace = run_dir.resolve().parent
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            EXPERIMENT, artifact_location=(workspace / "mlartifacts").as_uri())
        record = run_dir / TRACKING
        known = json.loads(record.read_text()).get("mlflow_run_id") if record.is_file() else None
        if resumed and known:
            self.run_id = known
            self.client.update_run(known, status="RUNNING")
            return
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        record.write_text(json.dumps({"mlflow_run_id": self.run_id, "tracking_uri": uri}))
        items = [mlflow.entities.Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def rewind(self, step: int) -> None:
        pass  # MLflow keeps every logged value; the steps logged again follow them

    def log_metrics(self, values: dict, step: int) -> None:
        import mlflow

        if values:
            stamp = mlflow.utils.time.get_current_time_millis()
            self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, v, stamp, step)
                                                        for k, v in values.items()])

    def finish(self, status: str, run_dir: Path, final_dir: Path | None) -> None:
        for name in TRACKED_ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if final_dir is not None and final_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(final_dir), artifact_path="final")
        mlflow_status = {"completed": "FINISHED", "interrupted": "KILLED", "stopped": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, status=mlflow_status)


def tag_mlflow_run(run_dir: Path, tags: dict) -> bool:
    """Add ``tags`` to the MLflow run a run directory logged to (a tuning trial's study,
    number and state); False when the run logged to no MLflow run."""
    record = run_dir / TRACKING
    if not record.is_file():
        return False
    import mlflow

    known = json.loads(record.read_text())
    client = mlflow.MlflowClient(known["tracking_uri"])
    for key, value in tags.items():
        client.set_tag(known["mlflow_run_id"], key, str(value))
    return True
