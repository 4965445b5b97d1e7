"""A model folder is checked against the hashes written with it: edited weights, edited
metadata, missing or added files are refused before the model is used (by reload, serve and
export alike), naming what differs."""

from __future__ import annotations

import json

import pytest

from tunesmith.errors import ModelError
from tunesmith.methods.saved import load_trained
from tunesmith.rundir import verify_model_folder
from tunesmith.serve.registry import Registry
from tunesmith.synthetic import make_lora_run


@pytest.fixture()
def run(tmp_path, tiny_llama_dir):
    return make_lora_run(tmp_path / "run", tiny_llama_dir, "causal_lm", seed=1)


def test_an_untouched_folder_passes_and_reloads(run):
    verify_model_folder(run / "final")
    model, _, meta = load_trained(run / "final")
    assert meta["method"] == "lora" and set(meta["files"]) >= {"adapter_model.safetensors", "adapter_config.json"}


def test_edited_weights_are_refused_by_reload_and_serve(run):
    weights = run / "final" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"adapter_model\.safetensors: content changed since it was written"):
        load_trained(run / "final")
    with pytest.raises(ModelError, match="is not the model Tunesmith wrote"):
        Registry().add_run("edited", run)


def test_edited_metadata_and_added_or_missing_files_are_named(run):
    meta_path = run / "final" / "tunesmith.json"
    meta = json.loads(meta_path.read_text())
    meta["method_config"]["r"] = 64
    meta_path.write_text(json.dumps(meta))
    (run / "final" / "adapter_model.bin").write_bytes(b"pickle")
    (run / "final" / "adapter_config.json").unlink()
    with pytest.raises(ModelError) as refused:
        verify_model_folder(run / "final")
    message = str(refused.value)
    assert "tunesmith.json: its fields were edited" in message
    assert "adapter_config.json: missing" in message and "adapter_model.bin: added after" in message


def test_export_refuses_edited_weights_and_an_out_that_is_a_file(run, tmp_path):
    from tunesmith.errors import ConfigError
    from tunesmith.export import export_run

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is an existing file, not a folder"):
        export_run(run, "merged", a_file)
    weights = run / "final" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="adapter_model.safetensors: content changed"):
        export_run(run, "merged", tmp_path / "merged")
    assert not (tmp_path / "merged" / "model.safetensors").exists()


def test_a_final_swapped_with_its_hashes_still_fails_the_recorded_predictions(tmp_path, tiny_bert_dir):
    from tunesmith.export import export_run
    from tunesmith.rundir import RunDir

    labels = ["negative", "positive"]
    run = make_lora_run(tmp_path / "run", tiny_bert_dir, "classification", seed=1, labels=labels)
    model, tokenizer, meta = load_trained(run / "final")
    from tunesmith.objectives.classification import ClassificationObjective

    texts = ["the film was wonderful", "the plot was awful", "fine acting"]
    objective = ClassificationObjective(tokenizer, labels, 64, overlength="truncate")
    probs = objective.predict(model, objective.encode([{"text": t, "label": labels[0]} for t in texts]), 8, "cpu")
    rows = [{"text": t, "label": "positive"} for t in texts]
    RunDir(run).write_predictions(rows, labels, probs.tolist())
    (run / "summary.json").write_text("{}")
    assert export_run(run, "merged", tmp_path / "ok")["checks"]  # the genuine final/ passes
    # Another adapter (another seed), complete with its own valid hashes, put in place of final/.
    import shutil

    other = make_lora_run(tmp_path / "other", tiny_bert_dir, "classification", seed=2, labels=labels)
    shutil.rmtree(run / "final")
    shutil.copytree(other / "final", run / "final")
    with pytest.raises(ModelError, match="does not reproduce the run's recorded predictions: on eval row"):
        export_run(run, "merged", tmp_path / "swapped")
