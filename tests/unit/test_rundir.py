"""The run-directory module is the one reader and writer of run files."""

from __future__ import annotations

import hashlib
import json

import pytest

from tunesmith.errors import ConfigError, ModelError
from tunesmith.rundir import RunDir, read_model_meta, resolve_final_dir, write_model_meta


def test_model_meta_round_trips_and_a_missing_one_is_named(tmp_path):
    meta = {"task": "causal_lm", "method": "lora", "system_prompt": "你是 Quill。"}
    (tmp_path / "weights.safetensors").write_bytes(b"w")
    write_model_meta(tmp_path, meta)
    saved = read_model_meta(tmp_path)
    assert {k: saved[k] for k in meta} == meta
    assert saved["files"] == {"weights.safetensors": hashlib.sha256(b"w").hexdigest()}  # what verification checks
    assert "你是" in (tmp_path / "tunesmith.json").read_text(encoding="utf-8")  # readable, not \u-escaped
    with pytest.raises(ModelError, match="has no tunesmith.json"):
        read_model_meta(tmp_path / "elsewhere")


def test_final_dir_is_found_from_a_run_or_its_final_folder(tmp_path):
    run = RunDir(tmp_path / "run")
    run.final.mkdir(parents=True)
    write_model_meta(run.final, {"method": "lora"})
    run.write_summary({"status": "completed"})
    assert resolve_final_dir(run.path) == (run.final, run.path)
    assert resolve_final_dir(run.final) == (run.final, run.path)
    copied = tmp_path / "copied-final"
    copied.mkdir()
    write_model_meta(copied, {"method": "lora"})
    assert resolve_final_dir(copied) == (copied, None)  # no summary.json beside it: not a run
    with pytest.raises(ConfigError, match="neither a run directory"):
        resolve_final_dir(tmp_path)


def test_rows_predictions_probes_and_scores_round_trip(tmp_path):
    run = RunDir(tmp_path)
    run.write_rows("eval_set", [{"text": "good", "label": "pos", "_where": "a.jsonl line 3"}])
    assert run.eval_rows() == [{"text": "good", "label": "pos"}]  # loader bookkeeping left out
    run.write_predictions([{"text": "good", "label": "pos"}], ["neg", "pos"], [[0.25, 0.75]])
    line = json.loads((tmp_path / "predictions.jsonl").read_text(encoding="utf-8"))
    assert line == {"text": "good", "label": "pos", "predicted": "pos", "probs": {"neg": 0.25, "pos": 0.75}}
    run.write_probes([{"input": "Who are you?", "before": "?", "after": "Quill"}])
    assert run.probe_inputs() == ["Who are you?"]
    assert run.eval_before() is None
    run.save_eval_before({"eval_loss": 2.5}, ["?"])
    assert run.eval_before() == ({"eval_loss": 2.5}, ["?"])
    run.forget_progress()
    assert run.eval_before() is None


def test_only_the_main_process_writes(tmp_path):
    worker = RunDir(tmp_path, is_main=False)
    worker.write_summary({"status": "completed"})
    worker.write_rows("eval_set", [{"text": "x"}])
    worker.write_probes([])
    worker.save_eval_before({}, [])
    assert list(tmp_path.iterdir()) == []
    assert worker.read_summary() == {}
