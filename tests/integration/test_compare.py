"""`tunesmith compare`: every variant trains in its own process; the table, CSV and charts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_recipe
from tunesmith.compare import PRESETS, parse_variants, plot_rank_study
from tunesmith.config.methods import DEFAULT_LR
from tunesmith.config.schema import RecipeConfig
from tunesmith.errors import ConfigError


def test_compare_runs_each_variant_and_writes_the_table(cls_recipe, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", str(cls_recipe), "--methods", "freeze,lora", "--steps", "12", "--out", str(out),
                 "--variant", 'bad={"type": "lora", "r": 0}', "--set", "train.eval_every=null",
                 "--set", "train.save_every=null"])
    assert code == 0
    rows = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in rows] == ["freeze", "lora", "bad"]
    freeze, lora, bad = rows
    for row in (freeze, lora):
        assert row["status"] == "completed" and row["steps"] == 12
        assert row["peak_rss_mb"] > 100 and row["train_s"] > 0 and row["saved_mb"] > 0
        assert row["after"]["accuracy"] != row["before"]["accuracy"] or row["after"]["eval_loss"] != row["before"]["eval_loss"]
    # Each method trains at its own recommended rate, not the recipe's.
    assert (freeze["lr"], lora["lr"]) == (DEFAULT_LR["freeze"], DEFAULT_LR["lora"])
    assert lora["trainable_params"] != freeze["trainable_params"]
    # Each saves only what it trained: the head (freeze: its fp32 tensors plus a small header) or
    # the adapter (LoRA, with the head it trains in full), far below the whole model's weights.
    assert 0 <= freeze["saved_mb"] * 1e6 - freeze["trainable_params"] * 4 < 2_000
    model_mb = (Path(load_recipe(cls_recipe).model.name) / "model.safetensors").stat().st_size / 1e6
    assert lora["saved_mb"] < model_mb / 3
    assert bad["status"] == "failed" and "method.r" in bad["error"]
    table = (out / "compare.md").read_text()
    assert "| lora |" in table and "failed: " in table
    with (out / "compare.csv").open() as fh:
        assert len(list(csv.reader(fh))) == 4
    assert (out / "compare.png").stat().st_size > 10_000
    assert "| freeze |" in capsys.readouterr().out


def _config():
    return RecipeConfig.model_validate({"name": "x", "task": "classification", "model": {"name": "m"},
                                        "data": {"train": "t.jsonl"}})


def test_rank_study_variants_keep_the_scale_and_target_q_or_qv():
    variants = parse_variants(None, [], True, "bert")
    assert [v.label for v in variants][:5] == [f"lora-r{r}-q" for r in (1, 2, 4, 8, 16)]
    assert {tuple(v.method["target_modules"]) for v in variants} == {("query",), ("query", "value")}
    assert all(v.method["alpha"] == 2 * v.method["r"] for v in variants)
    llama = parse_variants(None, [], True, "llama")
    assert llama[-1].method["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize(("methods", "extra", "message"), [
    ("lora,nope", [], "unknown method 'nope'"),
    (None, ["x={not json"], "JSON is invalid"),
    (None, ["just-a-label"], "LABEL="),
    ("lora", ['lora={"type": "lora"}'], "repeated: lora"),
    (None, [], "nothing to compare"),
])
def test_bad_variant_specs_are_config_errors(methods, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_variants(methods, extra, False, None)


def test_rank_study_on_an_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="query/value"):
        parse_variants(None, [], True, "gpt-unknown")


def test_every_preset_is_a_valid_method():
    for name, method in PRESETS.items():
        RecipeConfig.model_validate({"name": "x", "task": "classification", "model": {"name": "m"},
                                     "data": {"train": "t.jsonl"}, "method": method})


def test_rank_study_plot(tmp_path):
    rows = [{"status": "completed", "group": "rank-study", "r": r, "targets": t, "after": {"accuracy": 0.5 + r / 100}}
            for r in (1, 2, 4) for t in ("q", "qv")]
    plot_rank_study(rows, "accuracy", tmp_path / "rank.png")
    assert (tmp_path / "rank.png").stat().st_size > 5_000


def test_comparison_bars_start_at_zero_on_linear_axes(tmp_path, monkeypatch):
    """30 s against 23 s must look like 30 against 23, not 10x (the old log axes)."""
    import matplotlib.pyplot as plt

    from tunesmith.compare import plot_comparison

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    rows = [{"status": "completed", "label": label, "after": {"accuracy": acc}, "before": {"accuracy": 0.5},
             "trainable_pct": pct, "peak_rss_mb": 1500, "train_s": secs, "samples_per_s": 80, "saved_mb": mb}
            for label, acc, pct, secs, mb in (("full", 0.78, 100.0, 30.0, 90.9), ("lora", 0.77, 1.1, 23.0, 1.0))]
    plot_comparison(rows, "accuracy", tmp_path / "compare.png")
    (fig,) = figures
    assert (tmp_path / "compare.png").stat().st_size > 5_000
    for ax in fig.axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0, ax.get_title()
        heights = [p.get_height() for p in ax.patches]
        assert len([t for t in ax.texts if t.get_text()]) >= len(heights)  # every bar carries its value
    times = next(ax for ax in fig.axes if ax.get_title() == "train time (s)")
    assert [p.get_height() for p in times.patches] == [30.0, 23.0]
