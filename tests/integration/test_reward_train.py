"""task: reward through the CLI: learns separable pairs, reloads with plain transformers, resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import copy_as_crashed_after
from tunesmith.cli import main
from tunesmith.synthetic import preference_rows
from tunesmith.testing import write_reward_recipe


@pytest.fixture()
def reward_recipe(tmp_path, tiny_llama_dir):
    return write_reward_recipe(tmp_path, tiny_llama_dir)


def test_a_reward_model_learns_separable_pairs_and_reloads_with_plain_transformers(reward_recipe, capsys):
    assert main(["train", str(reward_recipe)]) == 0
    run_dir = reward_recipe.parent / "runs" / "tiny-reward"
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["eval_before"], summary["eval_after"]
    assert before["pairwise_accuracy"] <= 0.75
    assert after["pairwise_accuracy"] >= 0.95
    assert after["mean_margin"] > before["mean_margin"] + 1
    assert after["eval_loss"] < before["eval_loss"] / 2
    # rewards.jsonl holds each held-out pair's rewards; the report draws their distributions.
    rows = [json.loads(line) for line in (run_dir / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    margins = [r["chosen_after"] - r["rejected_after"] for r in rows]
    assert sum(margins) / len(margins) == pytest.approx(after["mean_margin"], abs=1e-6)
    assert sum(m > 0 for m in margins) / len(margins) == after["pairwise_accuracy"]
    assert sum(r["chosen_before"] - r["rejected_before"] for r in rows) / 40 == pytest.approx(before["mean_margin"])
    assert (run_dir / "rewards.png").stat().st_size > 10_000
    assert '<img src="rewards.png"' in (run_dir / "report.html").read_text()
    probes = {p["input"]: p["after"]["reward"] for p in summary["probes"]}
    assert probes["the film was wonderful"] > probes["the plot was awful"]

    # final/ is a PEFT adapter on a one-output sequence classifier: plain transformers + PEFT
    # load it and give the probes' rewards.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta = json.loads((run_dir / "final" / "tunesmith.json").read_text())
    assert meta["stage"] == "reward" and meta["task"] == "classification"
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    base = AutoModelForSequenceClassification.from_pretrained(meta["base_model_path"], num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, run_dir / "final").eval()
    for text, reward in probes.items():
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": ""},
                                                 {"role": "assistant", "content": text}], tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            assert float(model(input_ids=ids).logits[0, 0]) == pytest.approx(reward, abs=1e-3)

    # Tunesmith's own loader gives the same one-output model.
    from tunesmith.methods.saved import load_trained

    loaded, _, _ = load_trained(run_dir / "final")
    assert loaded.config.num_labels == 1 and loaded.config.id2label == {0: "reward"}

    # The server scores with it: POST /v1/score gives the rewards the objective computes,
    # batched across requests; /v1/classify sends the caller to /v1/score.
    from fastapi.testclient import TestClient

    from tunesmith.objectives.reward import RewardObjective
    from tunesmith.serve.app import create_app
    from tunesmith.serve.engine import Engine
    from tunesmith.serve.registry import Registry

    registry = Registry()
    registry.add_run("rm", run_dir)
    engine = Engine(registry, max_batch=8, batch_wait_ms=50)
    try:
        client = TestClient(create_app(registry, engine, api_key=None))
        fresh = preference_rows(2, seed=5)  # new pairs of the training distribution
        answers = [fresh[0]["chosen"], fresh[0]["rejected"], fresh[1]["chosen"]]
        reply = client.post("/v1/score", json={"model": "rm", "prompt": "write a one-sentence movie review.",
                                               "responses": answers})
        assert reply.status_code == 200, reply.text
        rewards = [row["reward"] for row in reply.json()["data"]]
        objective = RewardObjective(tokenizer, meta["max_length"], meta["system_prompt"])
        expected = objective.score(loaded, "write a one-sentence movie review.", answers)
        assert rewards == pytest.approx(expected, abs=1e-4)
        assert rewards[0] > rewards[1] and rewards[2] > rewards[1]
        messages = [{"role": "user", "content": "write a one-sentence movie review."}]
        as_chat = client.post("/v1/score", json={"model": "rm", "prompt": messages, "responses": answers[:1]})
        assert as_chat.json()["data"][0]["reward"] == pytest.approx(rewards[0], abs=1e-4)
        wrong = client.post("/v1/classify", json={"model": "rm", "input": "the film was wonderful"})
        assert wrong.status_code == 400 and "/v1/score" in wrong.json()["error"]["message"]
        empty = client.post("/v1/score", json={"model": "rm", "prompt": "x", "responses": []})
        assert empty.status_code == 400 and "responses" in empty.text
    finally:
        engine.close()


def test_a_reward_run_resumes_exactly(reward_recipe, tmp_path):
    args = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", "train.keep_last_n=100",
            "--set", "train.grad_accum=2", "--set", "train.epochs=1", "--set", "train.eval_every=4"]
    reference = tmp_path / "reference"
    assert main(["train", str(reward_recipe), "--output-dir", str(reference), *args]) == 0
    losses = (reference / "metrics.jsonl").read_text().splitlines()
    run = copy_as_crashed_after(reference, tmp_path / "resumed", 3)
    assert main(["train", str(reward_recipe), "--output-dir", str(run), "--resume", *args]) == 0
    resumed = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in resumed] == pytest.approx([json.loads(r)["loss"] for r in losses],
                                                                      abs=1e-6)
    ref = load_file(reference / "final" / "adapter_model.safetensors")
    got = load_file(run / "final" / "adapter_model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_tunesmith_eval_scores_a_reward_model_on_pairs_with_intervals(reward_recipe, tmp_path, capsys):
    assert main(["train", str(reward_recipe)]) == 0
    run_dir = reward_recipe.parent / "runs" / "tiny-reward"
    after = json.loads((run_dir / "summary.json").read_text())["eval_after"]
    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["task"] == "reward" and result["rows"] == 40
    metrics = result["metrics"]
    # The held-out pairs score as in training (the same rendering, the same rewards).
    assert metrics["pairwise_accuracy"]["value"] == after["pairwise_accuracy"]
    assert metrics["mean_margin"]["value"] == pytest.approx(after["mean_margin"], abs=1e-4)
    assert metrics["eval_loss"]["value"] == pytest.approx(after["eval_loss"], abs=1e-4)
    low, high = metrics["mean_margin"]["ci95"]
    assert low < metrics["mean_margin"]["value"] < high
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    trained = [json.loads(line) for line in (run_dir / "rewards.jsonl").read_text().splitlines()]
    assert [p["margin"] for p in predictions] == pytest.approx(
        [r["chosen_after"] - r["rejected_after"] for r in trained], abs=1e-4)
    assert metrics["mean_chosen"]["value"] - metrics["mean_rejected"]["value"] == pytest.approx(
        metrics["mean_margin"]["value"])
    assert (out / "rewards.png").stat().st_size > 10_000 and "Pairs (first 30)" in (out / "report.html").read_text()

    # Against the base model (its new, untrained reward head) on ratings, paired into pairs
    # as in training: the difference is the two accuracies' difference, with an interval.
    ratings = [{"prompt": "write a one-sentence movie review.", "response": r[side], "score": score}
               for r in preference_rows(30, seed=9) for side, score in (("chosen", 5), ("rejected", 1))]
    from tunesmith.jsonl import write_jsonl

    write_jsonl(tmp_path / "ratings.jsonl", ratings)
    against = tmp_path / "against"
    assert main(["eval", str(run_dir), "--data", str(tmp_path / "ratings.jsonl"), "--against", "base",
                 "--out", str(against), "--no-progress"]) == 0
    result = json.loads((against / "metrics.json").read_text())
    assert result["rows"] == 30
    own, base = result["metrics"]["pairwise_accuracy"]["value"], result["against_metrics"]["pairwise_accuracy"]["value"]
    assert own >= 0.9 and result["deltas"]["pairwise_accuracy"]["delta"] == pytest.approx(own - base)
    assert result["deltas"]["pairwise_accuracy"]["ci95"][0] > 0  # better than the base, beyond the noise
    first = json.loads((against / "predictions.jsonl").read_text().splitlines()[0])
    assert {"against_margin", "against_reward_chosen", "against_correct"} <= set(first)

    # Generation metrics are refused by name before any model loads.
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--metrics", "bleu", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown metric(s) bleu for a reward model" in capsys.readouterr().err
