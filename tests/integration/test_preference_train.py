"""task: preference through the CLI: every loss raises held-out preference accuracy; the
reference cache and exact resume; the guard acts on preference losses."""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tests.conftest import copy_as_crashed_after
from tunesmith.cli import main
from tunesmith.jsonl import write_jsonl
from tunesmith.config.schema import GuardConfig, LoraMethod, PreferenceConfig, TrainConfig
from tunesmith.methods import apply_method
from tunesmith.models.load import load_model
from tunesmith.objectives.preference import PreferenceObjective
from tunesmith.synthetic import poison_losses, preference_rows
from tunesmith.testing import write_preference_recipe
from tunesmith.train.backend import Backend
from tunesmith.train.loop import train


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("loss", ["dpo", "ipo", "orpo", "simpo", "kto"])
def test_every_preference_loss_raises_held_out_preference_accuracy(loss, tmp_path, tiny_llama_dir):
    # ORPO's odds-ratio term at its default weight (0.1) moves the tiny model's pairs slowly.
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, loss, **({"orpo_lambda": 1.0} if loss == "orpo" else {}))
    assert main(["train", str(recipe)]) == 0
    run_dir = tmp_path / "runs" / f"tiny-{loss}"
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["eval_before"], summary["eval_after"]
    assert after["pairwise_accuracy"] >= before["pairwise_accuracy"] + 0.2
    assert after["pairwise_accuracy"] >= 0.65
    assert after["mean_margin"] > before["mean_margin"]
    assert after["eval_loss"] < before["eval_loss"]
    # The training log carries the implicit rewards; their margin grows.
    logged = _lines(run_dir / "metrics.jsonl")
    assert {"rewards/chosen", "rewards/rejected", "completion_length"} <= set(logged[0])
    margins = [r["rewards/chosen"] - r["rewards/rejected"] for r in logged]
    assert sum(margins[-5:]) / 5 > sum(margins[:5]) / 5
    if loss == "kto":
        assert all(r["kl"] >= 0 for r in logged)
    # ORPO and SimPO have no reference model.
    assert summary.get("reference") == ("adapters disabled" if loss in ("dpo", "ipo", "kto") else None)
    assert (run_dir / "rewards.png").stat().st_size > 10_000
    meta = json.loads((run_dir / "final" / "tunesmith.json").read_text())
    assert meta["stage"] == "preference" and meta["task"] == "causal_lm"


def test_a_dpo_run_with_a_precomputed_reference_resumes_exactly_from_the_cache(tmp_path, tiny_llama_dir, capsys):
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, "dpo", precompute_reference=True)
    args = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", "train.keep_last_n=100",
            "--set", "train.grad_accum=2", "--set", "train.epochs=1", "--set", "train.eval_every=4"]
    reference = tmp_path / "reference"
    assert main(["train", str(recipe), "--output-dir", str(reference), *args]) == 0
    first = json.loads((reference / "summary.json").read_text())
    assert first["reference"] == "precomputed"
    run = copy_as_crashed_after(reference, tmp_path / "resumed", 3)
    capsys.readouterr()
    assert main(["train", str(recipe), "--output-dir", str(run), "--resume", *args]) == 0
    assert "reference model: cached" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["reference"] == "cached"
    assert [r["loss"] for r in _lines(run / "metrics.jsonl")] == pytest.approx(
        [r["loss"] for r in _lines(reference / "metrics.jsonl")], abs=1e-6)
    ref = load_file(reference / "final" / "adapter_model.safetensors")
    got = load_file(run / "final" / "adapter_model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)

    # The precomputed reference trains exactly as the adapter-disabled one does.
    live = tmp_path / "live"
    assert main(["train", str(recipe), "--output-dir", str(live), *args,
                 "--set", "preference.precompute_reference=false"]) == 0
    assert [r["loss"] for r in _lines(live / "metrics.jsonl")] == pytest.approx(
        [r["loss"] for r in _lines(reference / "metrics.jsonl")], abs=1e-5)


def test_a_full_fine_tuning_dpo_run_keeps_a_frozen_reference(tmp_path, tiny_llama_dir):
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, "dpo")
    assert main(["train", str(recipe), "--set", "method={type: full}", "--set", "train.lr=3e-4"]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny-dpo" / "summary.json").read_text())
    assert summary["reference"] == "frozen copy"
    assert summary["eval_after"]["pairwise_accuracy"] >= summary["eval_before"]["pairwise_accuracy"] + 0.2


def test_the_guard_skips_a_nan_preference_loss_and_training_goes_on(tmp_path, tiny_llama_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    model = apply_method(model, LoraMethod(r=8, alpha=16, dropout=0.0), "causal_lm")
    objective = poison_losses(PreferenceObjective(tokenizer, 48, PreferenceConfig(loss="dpo")), {12: "nan"})
    features = objective.encode(preference_rows(120, seed=1))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=5e-3, log_every=1, guard=GuardConfig(min_history=5))
    stats = train(model, objective, features, cfg, lr=cfg.lr, seed=7, run_dir=tmp_path,
                  backend=Backend(Accelerator(cpu=True)), show_progress=False)
    events = _lines(tmp_path / "events.jsonl")
    assert [e["reason"] for e in events if e["event"] == "skip"][0].startswith("non-finite loss")
    assert stats.skipped_batches == 1
    losses = [r["loss"] for r in _lines(tmp_path / "metrics.jsonl")]
    assert all(math.isfinite(v) for v in losses) and sum(losses[-5:]) / 5 < losses[0] - 0.1


def test_on_policy_rejections_are_written_by_the_starting_model_and_dpo_learns_from_them(tmp_path, tiny_llama_dir):
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, "dpo")
    given = preference_rows(40, seed=2)
    # Train rows come with good answers only; half the eval rows keep their own rejected answer.
    write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": r["prompt"], "chosen": r["chosen"]}
                                           for r in preference_rows(120, seed=1)])
    write_jsonl(tmp_path / "pairs_eval.jsonl", [r if i % 2 else {"prompt": r["prompt"], "chosen": r["chosen"]}
                                                for i, r in enumerate(given)])
    args = ["--set", "data.generate_rejected.max_new_tokens=8"]
    run_dir = tmp_path / "runs" / "tiny-dpo"
    assert main(["train", str(recipe), *args]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    info = summary["data"]["rejections"]
    assert info["rows"] == 140 and info["kept"] + info["empty"] + info["same_as_chosen"] == 140
    assert info["kept"] >= 130
    held_out = _lines(run_dir / "eval_set.jsonl")
    kept_own = [r for r in held_out if r["rejected"] in {g["rejected"] for g in given}]
    assert len(kept_own) == 20  # the rows that had a rejected answer kept it
    generated = [r["rejected"] for r in held_out if r not in kept_own]
    # Sampled, so one prompt repeated across rows gets different answers.
    assert len(generated) >= 18 and len(set(generated)) >= len(generated) - 2
    # The generated answers are what the starting model samples: the same recipe again
    # (new run, same starting model) reads them from the data cache, and they are equal.
    again = tmp_path / "again"
    assert main(["train", str(recipe), *args, "--output-dir", str(again), "--set", "train.max_steps=1"]) == 0
    assert json.loads((again / "summary.json").read_text())["data"]["cache"]["hit"] is True
    assert _lines(again / "eval_set.jsonl") == held_out
    # And DPO learns to prefer the chosen answers over the model's own.
    before, after = summary["eval_before"], summary["eval_after"]
    assert after["pairwise_accuracy"] >= 0.8 and after["eval_loss"] < before["eval_loss"]


def test_a_pair_without_its_rejected_answer_is_named_unless_rejections_are_generated(tmp_path, tiny_llama_dir, capsys):
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, "dpo")
    rows = preference_rows(120, seed=1)
    del rows[6]["rejected"]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert main(["train", str(recipe)]) != 0
    err = capsys.readouterr().err
    assert "line 7" in err and "'rejected' is missing" in err


def test_gradient_checkpointing_trains_to_the_same_losses(tmp_path, tiny_llama_dir, monkeypatch):
    import transformers.modeling_utils as modeling_utils

    recomputed = []
    real = modeling_utils.checkpoint
    monkeypatch.setattr(modeling_utils, "checkpoint", lambda *a, **k: recomputed.append(1) or real(*a, **k))
    recipe = write_preference_recipe(tmp_path, tiny_llama_dir, "dpo")
    args = ["--set", "train.max_steps=4", "--set", "train.log_every=1"]
    assert main(["train", str(recipe), *args, "--output-dir", str(tmp_path / "plain")]) == 0
    assert not recomputed
    assert main(["train", str(recipe), *args, "--output-dir", str(tmp_path / "checkpointed"),
                 "--set", "train.gradient_checkpointing=true"]) == 0
    assert len(recomputed) >= 4 * 2  # every block of every training step went through the checkpoint
    plain, checkpointed = (_lines(tmp_path / name / "metrics.jsonl") for name in ("plain", "checkpointed"))
    assert [r["loss"] for r in checkpointed] == pytest.approx([r["loss"] for r in plain], abs=1e-5)
    assert plain[-1]["loss"] != plain[0]["loss"]  # the adapter moved: the gradients flowed through the recompute
