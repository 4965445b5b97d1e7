"""The UI's jobs with real runs (no browser): Stop checkpoints and Resume finishes the same
run; a restarted UI adopts a run still going and can stop it; Export runs the gate."""

from __future__ import annotations

import shutil

import pytest
import yaml
from fastapi.testclient import TestClient

from tunesmith.testing import wait_until, write_cls_recipe
from tunesmith.ui.app import create_app
from tunesmith.ui.forms import recipe_to_values

TOKEN = "t"
HEADERS = {"X-Tunesmith-Token": TOKEN}


@pytest.fixture()
def workspace(tmp_path, tiny_bert_dir):
    shutil.copytree(tiny_bert_dir, tmp_path / "models" / "tiny-bert")
    write_cls_recipe(tmp_path, tmp_path / "models" / "tiny-bert")
    return tmp_path


def _ui(workspace):
    app, ctx = create_app(workspace, token=TOKEN, with_playground=False)
    ctx.jobs.start()
    return TestClient(app, base_url="http://127.0.0.1"), ctx


def _values(workspace, **changes) -> dict:
    raw = yaml.safe_load((workspace / "recipe.yaml").read_text())
    raw.pop("output_dir")
    return {**recipe_to_values(raw), **changes}


def _row(client, name: str) -> dict:
    return next(r for r in client.get("/api/runs").json()["runs"] if r["name"] == name)


def _wait(predicate, timeout: float, what: str):
    wait_until(predicate, timeout, what, poll=0.2)


def _logged(workspace, name: str) -> int:
    path = workspace / "runs" / name / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_stop_saves_a_checkpoint_and_resume_finishes_the_run(workspace):
    client, ctx = _ui(workspace)
    # 160 rows / 16 = 10 steps an epoch (eval.jsonl holds the eval rows); 60 epochs = 600 steps, logged every 2.
    values = _values(workspace, name="long", **{"train.epochs": "60", "train.save_every": "500"})
    assert client.post("/api/runs", json={"values": values}, headers=HEADERS).status_code == 201
    _wait(lambda: _logged(workspace, "long") >= 5, 120, "the first logged steps")
    assert _row(client, "long")["status"] == "running"
    assert client.post("/api/runs/long/stop", headers=HEADERS).json() == {"result": "stopping"}
    _wait(lambda: _row(client, "long")["status"] == "interrupted", 60, "the stop")
    summary = client.get("/api/runs/long").json()["summary"]
    stopped_at = summary["interrupted_at_step"]
    assert 0 < stopped_at < 600 and (workspace / "runs" / "long" / "checkpoints" / f"step-{stopped_at}").is_dir()
    assert client.post("/api/runs/long/resume", headers=HEADERS).status_code == 201
    _wait(lambda: _row(client, "long")["status"] == "completed", 240, "the resumed run")
    summary = client.get("/api/runs/long").json()["summary"]
    assert summary["train"]["steps"] == 600
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in
             (workspace / "runs" / "long" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 601, 2))  # no step lost or logged twice across the stop
    ctx.jobs.close()


def test_a_restarted_ui_adopts_a_running_run_and_can_stop_it(workspace):
    client, ctx = _ui(workspace)
    values = _values(workspace, name="adopted", **{"train.epochs": "60", "train.save_every": "500"})
    client.post("/api/runs", json={"values": values}, headers=HEADERS)
    _wait(lambda: _logged(workspace, "adopted") >= 3, 120, "the run to start")
    ctx.jobs.close()  # the first UI goes away; its run keeps going
    again, ctx2 = _ui(workspace)
    assert _row(again, "adopted")["status"] == "running"
    assert again.post("/api/runs/adopted/stop", headers=HEADERS).json() == {"result": "stopping"}
    _wait(lambda: _row(again, "adopted")["status"] == "interrupted", 60, "the adopted run to stop")
    # Starting the same name again is refused unless asked to replace it.
    refused = again.post("/api/runs", json={"values": values}, headers=HEADERS)
    assert refused.status_code == 409 and "already exists" in refused.json()["detail"]
    ctx2.jobs.close()


def test_export_from_the_ui_reports_its_gate(workspace):
    client, ctx = _ui(workspace)
    values = _values(workspace, name="small", **{"train.epochs": "2", "method.type": "lora"})
    client.post("/api/runs", json={"values": values}, headers=HEADERS)
    _wait(lambda: _row(client, "small")["status"] == "completed", 120, "the run")
    assert client.post("/api/runs/small/export", json={"to": "merged"}, headers=HEADERS).status_code == 201
    assert client.post("/api/runs/small/export", json={"to": "pickle"}, headers=HEADERS).status_code == 400
    bad = client.post("/api/runs/small/export", json={"to": "pruned", "sparsity": 1.5}, headers=HEADERS)
    assert bad.status_code == 400 and "sparsity must be a float from 0.01 to 0.99" in bad.json()["detail"]
    bad = client.post("/api/runs/small/export", json={"to": "pruned", "sparsity": 0.5, "recover_steps": "10; rm"},
                      headers=HEADERS)
    assert bad.status_code == 400 and "recover_steps" in bad.json()["detail"]

    def exported():
        exports = client.get("/api/runs/small").json()["exports"]
        return exports and exports[0]["state"] == "exited"
    _wait(exported, 180, "the export")
    export = client.get("/api/runs/small").json()["exports"][0]
    assert export["format"] == "merged" and export["returncode"] == 0
    checks = export["report"]["checks"]
    assert checks and all(c["passed"] for c in checks)
    assert "ui-job.json" not in export["report"]["files"]  # the UI's record is not part of the export

    # Pruning from the UI: its options reach the CLI and its gate comes back with the numbers.
    assert client.post("/api/runs/small/export", json={"to": "pruned", "sparsity": 0.25, "max_drop": 1},
                       headers=HEADERS).status_code == 201
    _wait(lambda: any(x["format"] == "pruned" and x["state"] == "exited"
                      for x in client.get("/api/runs/small").json()["exports"]), 180, "the pruned export")
    pruned = next(x for x in client.get("/api/runs/small").json()["exports"] if x["format"] == "pruned")
    assert pruned["returncode"] == 0 and pruned["report"]["pruning"]["requested_sparsity"] == 0.25
    assert [c["passed"] for c in pruned["report"]["checks"]] == [True, True, True]
    ctx.jobs.close()
