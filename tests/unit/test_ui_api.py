"""The web UI's server without a browser: who may call it, which paths it accepts, the form
generated from the schema, and the job queue surviving a restart."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from tunesmith.config.load import validate_recipe
from tunesmith.config.methods import METHODS
from tunesmith.config.reference import fields
from tunesmith.errors import ConfigError
from tunesmith.rundir import RunDir
from tunesmith.ui.app import create_app
from tunesmith.ui.forms import check_form, form_schema, form_to_recipe, recipe_to_values
from tunesmith.ui.jobs import JobQueue, process_alive
from tunesmith.ui.security import make_token

TOKEN = "secret-token"
VALUES = {"name": "r1", "task": "classification", "model.name": "builtin:minilm",
          "data.train.0.path": "builtin:rt-snippets", "method.type": "lora"}


def _client(tmp_path, host="127.0.0.1", **kwargs):
    app, ctx = create_app(tmp_path, host=host, token=TOKEN, with_playground=False, **kwargs)
    return TestClient(app, base_url="http://127.0.0.1:7860"), ctx


def test_state_changes_need_the_token_in_a_header(tmp_path):
    client, _ = _client(tmp_path)
    assert client.post("/api/recipe/check", json={"values": VALUES}).status_code == 401
    wrong = client.post("/api/recipe/check", json={"values": VALUES}, headers={"X-Tunesmith-Token": "nope"})
    assert wrong.status_code == 401
    # A cookie or a query parameter does not count for a POST (no CSRF by a link or a form).
    assert client.post(f"/api/recipe/check?token={TOKEN}", json={"values": VALUES}).status_code == 401
    ok = client.post("/api/recipe/check", json={"values": VALUES}, headers={"X-Tunesmith-Token": TOKEN})
    assert ok.status_code == 200 and ok.json()["errors"] == []
    assert client.get("/api/runs").status_code == 200  # reads are open on 127.0.0.1 ...
    assert TOKEN in client.get("/").text  # ... and the page carries the token there


def test_another_host_name_is_refused_on_loopback(tmp_path):
    client, _ = _client(tmp_path)
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example"):
        assert client.get("/", headers={"host": host}).status_code == 403, host
    assert client.get("/", headers={"host": "localhost:7860"}).status_code == 200


def test_on_a_network_address_a_token_is_required_for_everything(tmp_path):
    with pytest.raises(ValueError, match="needs a token"):
        make_token("0.0.0.0", None)
    assert len(make_token("127.0.0.1", None)) >= 24
    client, _ = _client(tmp_path, host="0.0.0.0")
    assert TOKEN not in client.get("/").text  # the page does not hand the token out
    assert client.get("/api/runs").status_code == 401
    assert client.get(f"/api/runs?token={TOKEN}").status_code == 200
    assert client.get("/api/runs", headers={"X-Tunesmith-Token": TOKEN}).status_code == 200


def test_paths_stay_inside_the_workspace(tmp_path):
    client, ctx = _client(tmp_path)
    headers = {"X-Tunesmith-Token": TOKEN}
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    run = ctx.workspace.runs / "r1"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    (run / "leak").symlink_to(outside)
    assert client.get("/api/runs/r1/files/leak/secret.txt").status_code == 403  # a symlink out
    assert client.get("/api/runs/r1/files/..%2F..%2F..%2Fetc%2Fpasswd").status_code in (403, 404)
    for name in ("%2E%2E", "a b", "x%2Fy", "-lead", "%00"):
        assert client.get(f"/api/runs/{name}").status_code in (400, 404), name
    assert client.post("/api/data/inspect", json={"path": "../../etc/passwd"}, headers=headers).status_code == 403
    assert client.put("/api/data/..%2Fescape.jsonl", content=b"{}", headers=headers).status_code in (400, 404)
    # A recipe naming a file outside the workspace is refused at that field.
    values = {**VALUES, "data.train.0.path": str(outside / "secret.txt")}
    problems = client.post("/api/recipe/check", json={"values": values}, headers=headers).json()["errors"]
    assert [p["key"] for p in problems] == ["data.train.0.path"] and "outside the workspace" in problems[0]["message"]
    # So is a model the recipe would load from outside: a teacher, a reward-model run.
    from tunesmith.ui.forms import confine_paths

    raw = {"distill": {"teacher": str(outside)}, "grpo": {"rewards": [{"type": "reward_model", "run": "../x"}]}}
    assert [key for key, _ in confine_paths(raw, ctx.workspace.root)] == ["distill.teacher", "grpo.rewards.0.run"]
    inside = {"distill": {"teacher": "runs/r1"}}
    assert confine_paths(inside, ctx.workspace.root) == [] and inside["distill"]["teacher"].endswith("/runs/r1")
    remote = client.post("/api/recipe/check", json={"values": {**VALUES, "model.trust_remote_code": True}},
                         headers=headers).json()["errors"]
    assert [p["key"] for p in remote] == ["model.trust_remote_code"]


def test_uploads_have_a_size_limit(tmp_path):
    client, ctx = _client(tmp_path, max_upload_mb=1)
    headers = {"X-Tunesmith-Token": TOKEN}
    assert client.put("/api/data/big.jsonl", content=b"x" * 1_000_001, headers=headers).status_code == 413
    assert not (ctx.workspace.data / "big.jsonl").exists()
    ok = client.put("/api/data/small.jsonl", content=b'{"text": "a", "label": "x"}\n', headers=headers)
    assert ok.status_code == 201 and (ctx.workspace.data / "small.jsonl").read_bytes().startswith(b'{"text"')
    assert client.put("/api/data/evil.py", content=b"print(1)", headers=headers).status_code == 400


def test_the_form_offers_every_schema_field_and_every_method():
    schema = form_schema()
    offered = {f["key"] for s in schema["sections"] for f in s["fields"]}
    expected = {row["key"].replace(".train.", ".train.0.", 1) if row["key"].startswith("data.train.") else row["key"]
                for row in fields() if row["type"] != "section" and not row["key"].startswith("method[")}
    expected = {k.replace("data.eval.", "data.eval.0.", 1) if k.startswith("data.eval.") and k.count(".") == 2 else k
                for k in expected}
    expected = {k.replace("grpo.rewards.", "grpo.rewards.0.", 1) for k in expected}
    assert expected - offered == {"output_dir", "model.trust_remote_code"}  # the UI decides / never sets these
    assert set(schema["methods"]) == set(METHODS)
    lora = {f["name"]: f for f in schema["methods"]["lora"]["fields"]}
    assert lora["r"]["default"] == 8 and lora["r"]["description"] == "LoRA rank."
    assert lora["init"]["widget"] == "select" and "pissa" in lora["init"]["choices"]
    task = next(f for f in schema["sections"][0]["fields"] if f["key"] == "task")
    assert task["widget"] == "select" and task["required"]


def test_form_values_read_like_set_options_and_errors_match_the_cli(tmp_path):
    values = {**VALUES, "task": "causal_lm", "model.name": "builtin:smollm2-135m",
              "data.train.0.path": "builtin:chatterbot-en", "train.lr": "2e-4", "train.batch_size": "auto",
              "data.system_prompt": "Answer: briefly",
              "data.clean.enabled": True, "data.clean.min_chars": "3", "data.dedup.near": True,
              "method.target_modules": "[q_proj, v_proj]"}
    raw, problems = form_to_recipe(values)
    assert problems == []
    assert raw["train"] == {"lr": 2e-4, "batch_size": "auto"}
    assert raw["data"]["system_prompt"] == "Answer: briefly"  # a str field stays text, colon and all
    assert raw["data"]["clean"] == {"min_chars": 3} and "dedup" not in raw["data"]  # section off: left out
    assert raw["method"]["target_modules"] == ["q_proj", "v_proj"]
    config, _, problems = check_form(values, tmp_path)
    assert problems == [] and config.train.lr == 2e-4
    # Round trip: a recipe's values give the same recipe back.
    assert form_to_recipe(recipe_to_values(raw))[0] == raw
    bad = {**VALUES, "train.lr": "abc", "train.epochs": "-1"}
    _, _, problems = check_form(bad, tmp_path)
    with pytest.raises(ConfigError) as cli:
        validate_recipe({**form_to_recipe(bad)[0]})
    assert sorted(k for k, _ in problems) == ["train.epochs", "train.lr"]
    assert all(message in str(cli.value) for _, message in problems)


def test_jobs_respect_the_limit_and_a_restarted_queue_adopts_them(tmp_path):
    # The queue runs `python -m tunesmith ARGS`; here a stand-in that sleeps ARGS seconds keeps it quick.
    fake = tmp_path / "fake-tunesmith.py"
    fake.write_text("import sys, time; time.sleep(float(sys.argv[1]))\n")
    command = [sys.executable, str(fake)]
    folders = [tmp_path / "runs" / name for name in ("a", "b", "c")]
    queue = JobQueue(lambda: [f for f in folders if f.exists()], limit=1, command=command)
    queue.submit(folders[0], ["30"], {"task": "classification"})
    queue.submit(folders[1], ["0.1"])
    queue.submit(folders[2], ["0.1"])
    states = [RunDir(f).read_job()["state"] for f in folders]
    assert states == ["running", "queued", "queued"]  # one at a time, in submission order
    first_pid = RunDir(folders[0]).read_job()["pid"]
    # A new queue (the UI restarted) sees the running process and keeps the others waiting.
    restarted = JobQueue(lambda: [f for f in folders if f.exists()], limit=1, command=command)
    restarted.tick()
    assert [RunDir(f).read_job()["state"] for f in folders] == ["running", "queued", "queued"]
    assert restarted.stop(folders[2]) == "cancelled"
    assert restarted.stop(folders[0]) == "stopping"  # SIGINT to the adopted process
    deadline = time.monotonic() + 20
    while RunDir(folders[1]).read_job().get("state") != "exited" and time.monotonic() < deadline:
        restarted.tick()
        time.sleep(0.1)
    jobs = [RunDir(f).read_job() for f in folders]
    assert [j["state"] for j in jobs] == ["exited", "exited", "cancelled"]
    assert jobs[1]["returncode"] == 0 and jobs[0]["pid"] == first_pid
    assert not process_alive(first_pid)  # gone (a zombie until the first queue, its parent, reaps it)
    queue.procs[folders[0]].wait(timeout=5)
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)


def test_the_runs_list_reads_status_from_the_run_directories(tmp_path):
    client, ctx = _client(tmp_path)
    for name, status in (("done", "completed"), ("broken", "failed")):
        run = ctx.workspace.runs / name
        run.mkdir()
        RunDir(run).write_summary({"status": status, "task": "classification", "method": "lora",
                                   "eval_after": {"accuracy": 0.8}, "eval_before": {"accuracy": 0.5},
                                   "total_wall_s": 12.5})
    rows = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert rows["done"]["status"] == "completed" and rows["done"]["metric"] == "accuracy"
    assert rows["done"]["value"] == 0.8 and rows["done"]["before"] == 0.5 and rows["done"]["duration_s"] == 12.5
    assert rows["broken"]["status"] == "failed"
    assert yaml.safe_load(client.post("/api/recipe/check", json={"values": VALUES},
                                      headers={"X-Tunesmith-Token": TOKEN}).json()["yaml"])["name"] == "r1"


def test_an_uploaded_recipe_fills_the_form_and_a_typo_gets_the_cli_suggestion(tmp_path):
    client, _ = _client(tmp_path)
    text = "name: up\ntask: classification\nmodel: {name: builtin:minilm}\ndata: {train: builtin:rt-snippets}\n" \
           "train: {learning_rate: 1e-4, epochs: 2}\nmethod: {type: ia3}\n"
    result = client.post("/api/recipe/upload", content=text.encode(), headers={"X-Tunesmith-Token": TOKEN}).json()
    assert result["values"]["data.train.0.path"] == "builtin:rt-snippets" and result["values"]["method.type"] == "ia3"
    assert result["values"]["train.epochs"] == "2"
    assert [e["message"] for e in result["errors"]] == ["unknown key 'train.learning_rate'. Did you mean 'train.lr'?"]
    broken = client.post("/api/recipe/upload", content=b"name: [unclosed", headers={"X-Tunesmith-Token": TOKEN})
    assert broken.status_code == 400 and "not valid YAML" in broken.json()["detail"]


def test_an_uploaded_data_file_is_inspected_with_its_bad_rows_named(tmp_path):
    client, _ = _client(tmp_path)
    headers = {"X-Tunesmith-Token": TOKEN}
    rows = [json.dumps({"text": f"row {i}", "label": "pos" if i % 2 else "neg"}) for i in range(6)]
    rows.insert(3, json.dumps({"text": "", "label": "pos"}))
    rows.append(json.dumps({"text": "row 1", "label": "neg"}))
    client.put("/api/data/mine.jsonl", content="\n".join(rows).encode(), headers=headers)
    assert client.get("/api/data").json()["files"] == [{"path": "data/mine.jsonl", "bytes": len("\n".join(rows))}]
    report = client.post("/api/data/inspect", json={"path": "data/mine.jsonl"}, headers=headers).json()
    assert report["validation"]["rejected"] == 1 and report["validation"]["valid"] == 7
    (reason, info), = report["rejects_by_reason"].items()
    assert "line 4" in info["examples"][0]  # the empty text, on the file's 4th line
    assert report["labels"]["all"] == {"neg": 4, "pos": 3} and report["duplicates"]["exact_duplicates"] == 1


def test_the_plan_panel_gives_tunesmith_plans_numbers(tmp_path, tiny_bert_dir):
    from tunesmith.config.load import load_recipe
    from tunesmith.plan.planner import make_plan

    client, _ = _client(tmp_path)
    values = {**VALUES, "method.type": "full", "data.max_length": "32"}
    shutil.copytree(tiny_bert_dir, tmp_path / "tiny")
    values["model.name"] = "tiny"
    result = client.post("/api/plan", json={"values": values}, headers={"X-Tunesmith-Token": TOKEN}).json()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(form_to_recipe({**values, "model.name": str(tmp_path / "tiny")})[0]))
    expected = make_plan(load_recipe(recipe), with_time=False)
    assert result["plan"]["params"] == expected.params and result["plan"]["components"]["weights"] == \
        expected.components["weights"]
    assert "plan for r1" in result["text"]


def test_the_live_stream_sends_new_lines_from_an_offset_and_holds_a_torn_line(tmp_path):
    client, ctx = _client(tmp_path)
    run = ctx.workspace.runs / "r"
    run.mkdir()
    RunDir(run).write_summary({"status": "completed", "task": "classification", "method": "lora"})
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 4, "lo')  # the 4th still being written
    with client.stream("GET", "/api/runs/r/live?metrics=1") as response:
        text = "".join(response.iter_text())
    events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in text.strip().split("\n\n")]
    assert events[0] == ("metrics", [{"step": 2, "loss": 0.5}, {"step": 3, "loss": 1 / 3}])
    assert events[1][0] == "status" and events[1][1]["status"] == "completed"
    assert events[-1] == ("end", {})
