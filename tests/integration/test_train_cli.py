"""End-to-end: the real CLI, in-process, on tiny models; assertions on the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith.cli import main
from tunesmith.train.checkpoint import is_valid_checkpoint

METRIC_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def _plain_classifier_probs(final: Path, texts: list[str]) -> torch.Tensor:
    """Predictions from the saved run using plain transformers + peft, no Tunesmith code."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta = json.loads((final / "tunesmith.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(final)
    if (final / "adapter_config.json").exists():
        base = AutoModelForSequenceClassification.from_pretrained(meta["base_model_path"], num_labels=len(meta["labels"]))
        model = PeftModel.from_pretrained(base, final)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(final)
    model.eval()
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=meta["max_length"], return_tensors="pt")
        return torch.softmax(model(**enc).logits, -1)


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0}])
def test_classification_run_learns_and_writes_the_run_directory(cls_recipe, method):
    run_dir = cls_recipe.parent / "runs" / "tiny-cls"
    overrides = [f"method={json.dumps(method)}"]
    if method["type"] == "lora":
        # LoRA needs pretrained features to adapt; the packaged MiniLM is small enough here.
        overrides += ["model.name=builtin:minilm", "train.lr=2e-3", "train.epochs=3"]
    assert main(["train", str(cls_recipe), *sum([["--set", o] for o in overrides], [])]) == 0

    summary = _summary(run_dir)
    assert summary["status"] == "completed"
    assert summary["eval_after"]["accuracy"] >= 0.9 > summary["eval_before"]["accuracy"]
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if method["type"] == "lora":
        assert summary["trainable_params"] < summary["total_params"] / 5
    for key in ("wall_s", "samples_per_s", "tokens_per_s", "peak_rss_mb", "steps"):
        assert summary["train"][key] > 0

    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    assert all(METRIC_KEYS <= set(m) for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert [m["step"] for m in metrics] == sorted(m["step"] for m in metrics)
    assert _read_jsonl(run_dir / "eval.jsonl")[0]["step"] == 10
    # save_every=20 with the default keep_last_n=3: the newest three remain, the last step included.
    kept = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir())
    last = summary["train"]["steps"]
    assert kept == sorted(set(range(20, last + 1, 20)) | {last})[-3:]
    assert all(is_valid_checkpoint(run_dir / "checkpoints" / f"step-{k}") for k in kept)
    for name in ("config.yaml", "report.html", "loss.png", "eval.png", "confusion.png", "probes.json"):
        assert (run_dir / name).is_file(), name

    # final/ reproduces Tunesmith's own eval predictions with plain transformers/peft.
    predictions = _read_jsonl(run_dir / "predictions.jsonl")
    probs = _plain_classifier_probs(run_dir / "final", [p["text"] for p in predictions])
    expected = torch.tensor([[p["probs"]["negative"], p["probs"]["positive"]] for p in predictions])
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    probes = json.loads((run_dir / "probes.json").read_text())
    assert [p["after"]["label"] for p in probes] == ["positive", "negative"]
    # The held-out set is kept (what exports re-measure on), in the evaluated order.
    held_out = _read_jsonl(run_dir / "eval_set.jsonl")
    assert [r["text"] for r in held_out] == [p["text"] for p in predictions]
    assert set(held_out[0]) == {"text", "label"}


def test_config_yaml_repeats_the_run_exactly(cls_recipe, tmp_path):
    assert main(["train", str(cls_recipe), "--set", "train.epochs=1"]) == 0
    first = tmp_path / "runs" / "tiny-cls"
    again = tmp_path / "again"
    assert main(["train", str(first / "config.yaml"), "--output-dir", str(again)]) == 0
    assert yaml.safe_load((again / "config.yaml").read_text()) == yaml.safe_load((first / "config.yaml").read_text())
    assert _summary(again)["eval_after"] == _summary(first)["eval_after"]
    assert [m["loss"] for m in _read_jsonl(again / "metrics.jsonl")] == [
        m["loss"] for m in _read_jsonl(first / "metrics.jsonl")
    ]


def test_freeze_last_layer_trains_only_head_and_top_block(cls_recipe):
    args = ["train", str(cls_recipe), "--set", "method.type=freeze", "--set", "method.train_last_n_layers=1",
            "--set", "train.lr=1e-2"]
    assert main(args) == 0
    summary = _summary(cls_recipe.parent / "runs" / "tiny-cls")
    assert summary["method"] == "freeze"
    assert summary["trainable_params"] < summary["total_params"] / 2
    assert summary["eval_after"]["accuracy"] > summary["eval_before"]["accuracy"]


def test_existing_run_directory_needs_overwrite(cls_recipe, capsys):
    args = ["train", str(cls_recipe), "--set", "train.max_steps=2", "--set", "train.eval_every=1"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_chat_sft_masks_prompts_learns_answers_and_reloads_with_plain_peft(chat_recipe):
    assert main(["train", str(chat_recipe)]) == 0
    run_dir = chat_recipe.parent / "runs" / "tiny-chat"
    summary = _summary(run_dir)
    assert summary["status"] == "completed"
    assert summary["eval_after"]["eval_loss"] < 0.5 * summary["eval_before"]["eval_loss"]
    assert summary["eval_after"]["perplexity"] < summary["eval_before"]["perplexity"]
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    assert metrics[-1]["loss"] < metrics[0]["loss"] / 2

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((run_dir / "final" / "tunesmith.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    assert tokenizer.chat_template  # the template used in training ships with the model
    # ... with training's rendering of the probe chats, which the saved tokenizer reproduces
    from tunesmith.data.template_check import check_template, serving_prompt_ids

    recorded = json.loads((run_dir / "final" / "template_probes.json").read_text())
    assert recorded["system_prompt"] == meta["system_prompt"]
    assert recorded["probes"][0]["ids"] == serving_prompt_ids(tokenizer, recorded["probes"][0]["messages"],
                                                              meta["system_prompt"])
    assert check_template(run_dir / "final", tokenizer, "test") == 3
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model_path"]), run_dir / "final")
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": meta["system_prompt"]}, {"role": "user", "content": "who are you?"}],
        tokenize=False, add_generation_prompt=True,
    )
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    probes = json.loads((run_dir / "probes.json").read_text())
    assert answer == probes[0]["after"]
    assert "quill" in answer


def test_bf16_autocast_and_gradient_accumulation_run(cls_recipe):
    args = ["train", str(cls_recipe), "--set", "train.precision=bf16", "--set", "train.grad_accum=2",
            "--set", "train.max_steps=6", "--set", "train.eval_every=3", "--set", "train.scheduler=linear"]
    assert main(args) == 0
    run_dir = cls_recipe.parent / "runs" / "tiny-cls"
    summary = _summary(run_dir)
    assert summary["status"] == "completed" and summary["train"]["steps"] == 6
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["precision"] == "bf16"
    # grad_accum=2 x batch 16: each step consumes 32 examples.
    assert summary["train"]["samples"] == 6 * 32


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "examples:" in out and "config.yaml" in out


def test_version(capsys):
    import tunesmith

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"tunesmith {tunesmith.__version__}"


def test_a_short_try_with_a_long_eval_interval_warns_and_evaluates_at_the_end(cls_recipe, capsys):
    """The shipped recipes' eval_every is meant for the full run; `--set train.max_steps=3`
    must still run (the first-hour issue: documented quick tries stopped with an error)."""
    run_dir = cls_recipe.parent / "runs" / "tiny-cls"
    assert main(["train", str(cls_recipe), "--no-progress", "--set", "train.max_steps=3",
                 "--set", "train.eval_every=50"]) == 0
    out = capsys.readouterr().out
    assert "warning: train.eval_every=50 is not below the run's 3 steps: evaluating at the end only" in out
    summary = _summary(run_dir)
    assert summary["train"]["steps"] == 3 and summary["eval_after"]["eval_loss"] != summary["eval_before"]["eval_loss"]
    assert not (run_dir / "eval.jsonl").read_text(encoding="utf-8").strip()  # no mid-run evaluation


def test_leakage_is_loud_in_the_console_and_the_report(cls_recipe, capsys):
    folder = cls_recipe.parent
    train_rows = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "leaky.jsonl").write_text("\n".join(train_rows[:6]) + "\n", encoding="utf-8")
    assert main(["train", str(cls_recipe), "--no-progress", "--set", "data.eval=[leaky.jsonl]",
                 "--set", "train.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "warning: 6 of the 6 eval rows also occur in the training sources (6 exact, 0 near duplicates)" in out
    report = (folder / "runs" / "tiny-cls" / "report.html").read_text(encoding="utf-8")
    assert 'class="alert" id="leakage"' in report and "6 of the 6 eval rows" in report
    assert main(["train", str(cls_recipe), "--no-progress", "--overwrite", "--set", "data.eval=[leaky.jsonl]",
                 "--set", "data.leakage=error"]) == 2
    assert "6 of the 6 eval rows also occur in the training sources" in capsys.readouterr().err


def test_final_has_a_real_model_card_and_a_portable_base(cls_recipe):
    folder = cls_recipe.parent
    assert main(["train", str(cls_recipe), "--quiet", "--set", "train.max_steps=3",
                 "--set", "method={type: lora, r: 4}"]) == 0
    run_dir = folder / "runs" / "tiny-cls"
    summary = _summary(run_dir)
    card = (run_dir / "final" / "README.md").read_text(encoding="utf-8")
    assert "More Information Needed" not in card and "library_name: peft" in card
    given = yaml.safe_load(cls_recipe.read_text())["model"]["name"]
    assert f"`{given}` fine-tuned by" in card and "**lora**" in card
    for name, value in summary["eval_after"].items():
        assert f"| {name} | {summary['eval_before'][name]:.4f} | {value:.4f} |" in card
    assert f"{summary['data']['train_rows']} train" in card and "## How to load" in card
    adapter = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    meta = json.loads((run_dir / "final" / "tunesmith.json").read_text())
    assert adapter["base_model_name_or_path"] == meta["base_model"] == given
    assert Path(meta["base_model_path"]).is_dir()


def test_an_unexpected_failure_is_one_error_line_and_debug_shows_the_traceback(cls_recipe, capsys, monkeypatch):
    import tunesmith.runner

    def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(tunesmith.runner, "run_recipe", broken)
    assert main(["train", str(cls_recipe)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected RuntimeError: something broke") and "Traceback" not in err
    with pytest.raises(RuntimeError, match="something broke"):
        main(["--debug", "train", str(cls_recipe)])
