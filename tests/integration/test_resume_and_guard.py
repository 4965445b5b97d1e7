"""Exact resume from any checkpoint, the numerical-health guard, early stopping, preflight."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tests.conftest import copy_as_crashed_after, sentiment_rows
from tunesmith.cli import main
from tunesmith.config.methods import FullMethod
from tunesmith.config.schema import GuardConfig, TrainConfig
from tunesmith.methods import apply_method
from tunesmith.models.load import load_model
from tunesmith.synthetic import poisoned_classification
from tunesmith.train.checkpoint import list_checkpoints
from tunesmith.train.guards import GuardStop
from tunesmith.train.backend import Backend
from tunesmith.train.loop import train

# Dropout on, accumulation on, several epochs, every step logged and checkpointed.
RESUME_ARGS = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", "train.keep_last_n=100",
               "--set", "train.grad_accum=2", "--set", "train.batch_size=8", "--set", "train.epochs=2",
               "--set", "train.eval_every=4"]


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_resume_from_any_checkpoint_reproduces_the_uninterrupted_run(cls_recipe, tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", str(cls_recipe), "--output-dir", str(reference), *RESUME_ARGS]) == 0
    ref_losses = _losses(reference)
    ref_weights = load_file(reference / "final" / "model.safetensors")
    steps = len(ref_losses)
    assert steps == 20  # 160 rows / (8 x 2) = 10 steps per epoch
    # Mid-epoch, mid-way through an epoch's last window, at the epoch boundary, right after it.
    for k in (3, 9, 10, 11):
        run = copy_as_crashed_after(reference, tmp_path / f"resumed-{k}", k)
        assert main(["train", str(cls_recipe), "--output-dir", str(run), "--resume", *RESUME_ARGS]) == 0
        losses = _losses(run)
        assert [s for s, _ in losses] == list(range(1, steps + 1))
        for (_, a), (_, b) in zip(losses, ref_losses):
            assert a == pytest.approx(b, abs=1e-6)
        weights = load_file(run / "final" / "model.safetensors")
        assert all(torch.equal(weights[name], ref_weights[name]) for name in ref_weights), k
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["train"]["steps"] == steps


def test_an_8bit_adamw_run_resumes_exactly(cls_recipe, tmp_path):
    """bitsandbytes' quantised moments and block scales go through the checkpoint intact."""
    args = [*RESUME_ARGS, "--set", "train.epochs=1", "--set", "train.optimizer=adamw_8bit"]
    reference = tmp_path / "reference"
    assert main(["train", str(cls_recipe), "--output-dir", str(reference), *args]) == 0
    run = copy_as_crashed_after(reference, tmp_path / "resumed", 6)
    assert main(["train", str(cls_recipe), "--output-dir", str(run), "--resume", *args]) == 0
    losses, ref_losses = _losses(run), _losses(reference)
    assert [s for s, _ in losses] == [s for s, _ in ref_losses] == list(range(1, 11))
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in ref_losses], abs=1e-6)
    weights, ref_weights = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(weights[name], ref_weights[name]) for name in ref_weights)


def test_resume_from_an_explicit_checkpoint_and_refuse_a_corrupt_one(cls_recipe, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(cls_recipe), "--output-dir", str(run), *RESUME_ARGS]) == 0
    ckpt = run / "checkpoints" / "step-5"
    (ckpt / "model" / "model.safetensors").write_bytes(b"garbage")
    assert main(["train", str(cls_recipe), "--output-dir", str(run), "--resume", str(ckpt), *RESUME_ARGS]) == 2
    assert "not a valid checkpoint" in capsys.readouterr().err
    # auto skips nothing valid: the newest checkpoint is intact, so it is used.
    assert main(["train", str(cls_recipe), "--output-dir", str(run), "--resume", "auto", *RESUME_ARGS]) == 0


# --- the guard -------------------------------------------------------------------------


def _guarded_run(tiny_bert_dir, tmp_path, poison, *, guard=None, grad_nan_at=None, **train_cfg):
    torch.manual_seed(0)
    model, tok = load_model(str(tiny_bert_dir), "classification", id2label={0: "negative", 1: "positive"})
    model = apply_method(model, FullMethod(), "classification")
    objective = poisoned_classification(tok, ["negative", "positive"], 32, poison=poison)
    features = objective.encode(sentiment_rows(160, seed=1))
    if grad_nan_at is not None:
        calls = {"n": 0}

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == grad_nan_at else grad

        model.classifier.weight.register_hook(hook)
    cfg = TrainConfig(**{"epochs": 6, "batch_size": 16, "lr": 5e-3, "log_every": 1, "warmup_ratio": 0.0,
                         "guard": guard or GuardConfig(min_history=5), **train_cfg})
    tmp_path.mkdir(parents=True, exist_ok=True)
    stats = train(model, objective, features, cfg, lr=cfg.lr, seed=7, run_dir=tmp_path,
                  backend=Backend(Accelerator(cpu=True)), show_progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    return stats, losses, events


def _tail(losses, n=10):
    return sum(losses[-n:]) / n


def test_guard_skips_a_spike_and_a_nan_and_the_run_ends_like_a_clean_one(tiny_bert_dir, tmp_path):
    _, clean, _ = _guarded_run(tiny_bert_dir, tmp_path / "clean", {})
    stats, guarded, events = _guarded_run(tiny_bert_dir, tmp_path / "guarded", {20: "spike", 35: "nan"},
                                          grad_nan_at=50, guard=GuardConfig(min_history=5, max_skips=5))
    reasons = [e["reason"] for e in events if e["event"] == "skip"]
    assert len(reasons) == 3
    assert any("spike" in r for r in reasons) and any("non-finite loss" in r for r in reasons)
    assert any("non-finite gradient" in r for r in reasons)
    assert all(e["sample_ids"] for e in events if e["event"] == "skip")
    assert stats.skipped_batches == 3 and stats.rollbacks == 0
    assert len(guarded) == len(clean)  # skipped batches are not steps: the step budget is kept
    assert all(math.isfinite(v) for v in guarded)
    assert abs(_tail(guarded) - _tail(clean)) <= 0.05 * _tail(clean) + 0.01

    # Without the guard the same NaN poisons the weights for good.
    _, unguarded, _ = _guarded_run(tiny_bert_dir, tmp_path / "unguarded", {35: "nan"},
                                   guard=GuardConfig(enabled=False))
    assert math.isnan(unguarded[-1])


def test_repeated_skips_roll_back_to_the_last_checkpoint_with_a_lower_lr(tiny_bert_dir, tmp_path):
    _, clean, _ = _guarded_run(tiny_bert_dir, tmp_path / "clean", {})
    guard = GuardConfig(min_history=5, max_skips=2, skip_window=10, rollback_lr_factor=0.5)
    stats, losses, events = _guarded_run(tiny_bert_dir, tmp_path / "rb", {30: "nan", 31: "nan"}, guard=guard,
                                         save_every=10)
    rollbacks = [e for e in events if e["event"] == "rollback"]
    assert len(rollbacks) == 1 and stats.rollbacks == 1
    assert rollbacks[0]["to_step"] == 20 and rollbacks[0]["lr_scale"] == 0.5
    assert all(math.isfinite(v) for v in losses) and _tail(losses) < losses[0]
    # The schedule continues from the checkpoint at half the rate.
    clean_lr = [json.loads(line)["lr"] for line in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
    rb_lr = [json.loads(line)["lr"] for line in (tmp_path / "rb" / "metrics.jsonl").read_text().splitlines()]
    assert len(rb_lr) == len(clean_lr)  # one line per step: the abandoned steps were re-logged
    assert rb_lr[:20] == clean_lr[:20]
    assert rb_lr[30] == pytest.approx(0.5 * clean_lr[30])


def test_rollback_before_any_checkpoint_restores_the_initial_weights(tiny_bert_dir, tmp_path):
    guard = GuardConfig(min_history=5, max_skips=1)
    stats, losses, events = _guarded_run(tiny_bert_dir, tmp_path, {3: "nan"}, guard=guard)
    rollback = next(e for e in events if e["event"] == "rollback")
    assert rollback["to_step"] == 0 and rollback["checkpoint"] == "initial weights"
    assert stats.steps == len(losses)


def test_endless_divergence_stops_with_a_report(tiny_bert_dir, tmp_path):
    guard = GuardConfig(min_history=5, max_skips=1, max_rollbacks=2)
    poison = {i: "nan" for i in range(10, 400)}
    with pytest.raises(GuardStop, match="2 rollbacks"):
        _guarded_run(tiny_bert_dir, tmp_path, poison, guard=guard)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("rollback") == 2 and events[-1]["event"] == "stop"


def test_remedies_run_shallow_grad_scale_adam_eps_and_fp16_scaling(tiny_bert_dir, tmp_path):
    stats, losses, _ = _guarded_run(tiny_bert_dir, tmp_path / "a", {}, shallow_grad_scale=0.1, shallow_layers=1,
                                    adam_epsilon=1e-6, max_steps=20)
    assert stats.steps == 20 and all(math.isfinite(v) for v in losses)
    from tunesmith.models.structure import shallow_parameters

    model, _ = load_model(str(tiny_bert_dir), "classification", id2label={0: "a", 1: "b"})
    shallow = {id(p) for p in shallow_parameters(model, 1)}
    assert id(model.bert.embeddings.word_embeddings.weight) in shallow
    assert all(id(p) in shallow for p in model.bert.encoder.layer[0].parameters())
    assert not any(id(p) in shallow for p in model.bert.encoder.layer[1].parameters())
    stats, losses, _ = _guarded_run(tiny_bert_dir, tmp_path / "b", {}, precision="fp16", max_steps=20, save_every=10)
    assert stats.steps == 20 and all(math.isfinite(v) for v in losses)
    state = torch.load(tmp_path / "b" / "checkpoints" / "step-20" / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0


# --- early stopping, keep_best, preflight ------------------------------------------------


def test_early_stopping_and_keep_best(cls_recipe, tmp_path):
    run = tmp_path / "es"
    args = ["train", str(cls_recipe), "--output-dir", str(run), "--set", "train.eval_every=2",
            "--set", "train.early_stopping_patience=2", "--set", "train.lr=1e-9", "--set", "train.save_every=100",
            "--set", "train.keep_best=true", "--set", "train.keep_last_n=1", "--set", "train.best_metric=eval_loss"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train"]["early_stopped"] is True
    assert summary["train"]["steps"] < 150
    best_step = summary["train"]["best"]["step"]
    kept = {int(p.name[5:]) for p in list_checkpoints(run)}
    assert best_step in kept and len(kept) <= 2
    assert any(json.loads(line)["event"] == "early_stop" for line in (run / "events.jsonl").read_text().splitlines())
    assert "early_stop" in (run / "report.html").read_text()  # events are shown in the report


def test_preflight_fails_before_loading_on_unwritable_dir_and_full_disk(cls_recipe, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", str(cls_recipe), "--output-dir", str(blocker / "run")]) == 2
    assert "not writable" in capsys.readouterr().err

    import shutil as shutil_module

    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: shutil_module._ntuple_diskusage(10, 10, 1024))
    assert main(["train", str(cls_recipe), "--output-dir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "Not enough disk space" in err and "keep_last_n" in err


def test_save_every_epoch_and_adapter_only_checkpoints_for_lora(cls_recipe, tmp_path):
    run = tmp_path / "epochs"
    args = ["train", str(cls_recipe), "--output-dir", str(run), "--set", "train.save_every_epoch=true",
            "--set", "train.epochs=2", "--set", "train.keep_last_n=5",
            "--set", 'method={"type": "lora", "r": 4, "alpha": 8}', "--set", "train.lr=2e-2"]
    assert main(args) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-10", "step-20"]  # 160 rows / 16 per step
    model_files = {p.name for p in (run / "checkpoints" / "step-10" / "model").iterdir()}
    assert "adapter_model.safetensors" in model_files and "model.safetensors" not in model_files
    manifest = json.loads((run / "checkpoints" / "step-10" / "manifest.json").read_text())
    assert manifest["epoch"] == 0 and manifest["data_cursor"] == 10 and manifest["config_hash"]
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])


def test_resuming_a_completed_run_does_nothing(cls_recipe, tmp_path, capsys):
    run = tmp_path / "done"
    args = ["train", str(cls_recipe), "--output-dir", str(run), "--set", "train.max_steps=4"]
    assert main(args) == 0
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "already completed; nothing to resume" in capsys.readouterr().out
    assert before == sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))


def test_a_finished_run_is_extended_with_the_schedule_recomputed(cls_recipe, tmp_path):
    import math

    run = tmp_path / "extended"
    base = ["train", str(cls_recipe), "--output-dir", str(run), "--set", "train.log_every=1",
            "--set", "train.save_every=3", "--set", "train.warmup_ratio=0", "--set", "train.lr=5e-3"]
    assert main([*base, "--set", "train.max_steps=6"]) == 0
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert main([*base, "--set", "train.max_steps=10", "--resume"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 11))
    assert lines[:6] == first  # the finished part is kept as it was
    # cosine over the new length, continued at step 7 (not the old curve, which had ended at 0)
    for record in lines[6:]:
        assert record["lr"] == pytest.approx(5e-3 * 0.5 * (1 + math.cos(math.pi * record["step"] / 10)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["train"]["steps"] == 10
    assert summary["extended"]["from"]["max_steps"] == 6 and summary["extended"]["to"]["max_steps"] == 10
    # another change than the length is still refused
    assert main([*base, "--set", "train.max_steps=12", "--set", "train.lr=1e-2", "--resume"]) == 2


def test_a_new_run_starts_from_a_finished_runs_adapter(cls_recipe, tmp_path, capsys):
    lora = ["--set", "method={type: lora, r: 4, alpha: 8, dropout: 0.0}", "--set", "train.lr=1e-2"]
    first = tmp_path / "first"
    assert main(["train", str(cls_recipe), "--output-dir", str(first), "--set", "train.max_steps=8", *lora]) == 0
    second = tmp_path / "second"
    assert main(["train", str(cls_recipe), "--output-dir", str(second), "--set", "train.max_steps=4", *lora,
                 "--set", f"model.adapter_from={first}"]) == 0
    done = json.loads((first / "summary.json").read_text())
    continued = json.loads((second / "summary.json").read_text())
    # the second run's starting point is the first run's end, not the bare base
    assert continued["eval_before"]["eval_loss"] == pytest.approx(done["eval_after"]["eval_loss"], rel=1e-5)
    assert continued["eval_before"]["eval_loss"] != pytest.approx(done["eval_before"]["eval_loss"], rel=1e-3)
    capsys.readouterr()
    assert main(["train", str(cls_recipe), "--output-dir", str(tmp_path / "third"), "--set", "train.max_steps=2",
                 "--set", "method={type: lora, r: 8}", "--set", f"model.adapter_from={first}"]) == 2
    assert "adapter_from" in capsys.readouterr().err
    assert main(["train", str(cls_recipe), "--output-dir", str(tmp_path / "fourth"), "--set", "train.max_steps=2",
                 "--set", "method={type: full}", "--set", f"model.adapter_from={first}"]) == 2
