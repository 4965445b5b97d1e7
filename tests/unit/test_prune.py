"""Structured pruning: the removed units are the masked ones, the model really shrinks and
reloads with plain transformers, and the export's gate refuses an over-limit drop."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tunesmith.config.load import load_recipe
from tunesmith.errors import ConfigError, ModelError
from tunesmith.export import export_run
from tunesmith.models.prune import (check_structure, choose_units, count_parameters, find_layout, head_shape,
                                    keep_masks, magnitude_importance, pruned_copy, taylor_importance, unit_masks)
from tunesmith.runner import run_recipe
from tunesmith.testing import write_cls_recipe


def _models(tiny_bert_dir, tiny_llama_dir):
    torch.manual_seed(0)
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return bert, llama


@pytest.mark.parametrize("structure", ["ffn", "heads", "both"])
def test_pruned_model_equals_masked_model_and_reloads(structure, tiny_bert_dir, tiny_llama_dir, tmp_path):
    bert, llama = _models(tiny_bert_dir, tiny_llama_dir)
    for model in ([bert, llama] if structure == "ffn" else [llama]):
        layout = find_layout(model)
        keep = choose_units(layout, magnitude_importance(model, layout), 0.5, structure)
        pruned = pruned_copy(model, layout, keep)
        ids = torch.randint(5, 200, (3, 11))
        with torch.no_grad():
            full = model(input_ids=ids).logits
            with unit_masks(model, layout, *keep_masks(layout, keep)):
                masked = model(input_ids=ids).logits
            got = pruned(input_ids=ids).logits
        assert (full - masked).abs().max() > 1e-3  # the masks remove something
        torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-5)
        assert count_parameters(pruned) < count_parameters(model)
        if structure != "heads":
            assert pruned.config.intermediate_size == layout.neurons // 2
            assert pruned.model.layers[0].mlp.down_proj.in_features == layout.neurons // 2 \
                if layout.kind == "llama" else pruned.bert.encoder.layer[0].output.dense.in_features == 32
        pruned.save_pretrained(tmp_path / layout.kind / structure)
        again = type(model).from_pretrained(tmp_path / layout.kind / structure).eval()
        with torch.no_grad():
            torch.testing.assert_close(again(input_ids=ids).logits, got)


def test_each_block_keeps_its_own_highest_scoring_units(tiny_llama_dir, tiny_bert_dir):
    _, llama = _models(tiny_bert_dir, tiny_llama_dir)
    layout = find_layout(llama)  # 4 heads in 2 key/value groups, 64 neurons, 2 blocks
    scores = {"ffn": torch.arange(2 * 64, dtype=torch.float).reshape(2, 64),
              "heads": torch.tensor([[9.0, 1.0, 5.0, 4.0], [1.0, 2.0, 3.0, 8.0]])}
    scores["ffn"][1] = scores["ffn"][1].flip(0)
    keep = choose_units(layout, scores, 0.5, "both")
    assert keep["ffn"][0] == list(range(32, 64)) and keep["ffn"][1] == list(range(32))
    # Half of 4 heads = 2: one head from each group (the better of the two in it).
    assert keep["heads"] == [[0, 2], [1, 3]]
    assert head_shape(layout, 0.25) == (2, 2)  # 3 heads is not a uniform shape: all 4 kept, nearest above
    with pytest.raises(ConfigError, match="between 0 and 1"):
        choose_units(layout, scores, 1.0, "ffn")


def test_taylor_scores_favour_units_the_loss_needs(tiny_bert_dir, tiny_llama_dir):
    bert, _ = _models(tiny_bert_dir, tiny_llama_dir)
    layout = find_layout(bert)

    class Objective:  # loss: the squared logit of class 0
        def loss_sum(self, model, batch):
            return model(input_ids=batch["input_ids"]).logits[:, 0].pow(2).sum()

    batches = [{"input_ids": torch.randint(5, 200, (4, 9))} for _ in range(3)]
    scores = taylor_importance(bert, layout, Objective(), batches)
    # Removing the unit scored highest changes the loss more than removing the lowest.
    block0 = scores["ffn"][0]
    ids = torch.cat([b["input_ids"] for b in batches])

    def loss_without(unit):
        ffn = torch.ones(len(layout.blocks), layout.neurons)
        ffn[0, unit] = 0
        with torch.no_grad(), unit_masks(bert, layout, ffn, None):
            return float(bert(input_ids=ids).logits[:, 0].pow(2).sum())

    base = loss_without([])
    assert abs(loss_without(int(block0.argmax())) - base) > abs(loss_without(int(block0.argmin())) - base)
    assert all(p.requires_grad for p in bert.parameters())  # left trainable as found


def test_bert_heads_are_refused_with_the_reason(tiny_bert_dir, tiny_llama_dir):
    bert, _ = _models(tiny_bert_dir, tiny_llama_dir)
    with pytest.raises(ConfigError, match="hidden_size / num_attention_heads"):
        check_structure(find_layout(bert), "heads")


@pytest.fixture(scope="module")
def trained_cls_run(tmp_path_factory, tiny_bert_dir):
    folder = tmp_path_factory.mktemp("prune-run")
    recipe = write_cls_recipe(folder, tiny_bert_dir)
    config = load_recipe(recipe, ["train.epochs=6", "train.save_every=1000"])
    run_recipe(config, base_dir=folder, show_progress=False, log=lambda *_: None)
    return folder / "runs" / "tiny-cls"


def test_pruned_export_gates_measures_and_reloads(trained_cls_run, tmp_path):
    report = export_run(trained_cls_run, "pruned", tmp_path / "p", prune={
        "sparsity": 0.25, "structure": "ffn", "max_drop": 1.0, "recover_steps": 20, "recover_lr": 1e-3})
    parity, gate = report["checks"][1], report["checks"][2]
    assert parity["passed"] and parity["max_abs_diff"] <= parity["tolerance"]
    assert gate["metric"] == "accuracy" and gate["before"] == report["metrics"]["unpruned"]["accuracy"]
    assert report["pruning"]["intermediate_size"] == [64, 48]
    assert report["params"]["recovered"] < report["params"]["unpruned"]
    assert report["size_mb"]["recovered"] < report["size_mb"]["unpruned"]
    assert set(report["metrics"]) == {"unpruned", "pruned", "recovered"}
    saved = json.loads((tmp_path / "p" / "export.json").read_text())
    assert saved["metrics"] == report["metrics"]
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p")
    assert plain.config.intermediate_size == 48 and plain.config.id2label[0] in ("negative", "positive")


def test_pruned_export_refuses_an_over_limit_drop_and_writes_nothing(trained_cls_run, tmp_path):
    # 98% of the neurons removed: accuracy falls well over 5 points on this run.
    with pytest.raises(ModelError, match=r"accuracy from 0\.\d+ to 0\.\d+: .* more than --max-drop 0\.05") as err:
        export_run(trained_cls_run, "pruned", tmp_path / "p", prune={
            "sparsity": 0.98, "structure": "ffn", "max_drop": 0.05, "importance": "magnitude"})
    assert "nothing was written" in str(err.value)
    assert not (tmp_path / "p").exists()


def test_export_cli_prunes_and_prints_the_gate(trained_cls_run, tmp_path, capsys):
    from tunesmith.cli import main

    assert main(["export", str(trained_cls_run), "--to", "pruned", "--out", str(tmp_path / "p"),
                 "--sparsity", "0.5", "--importance", "magnitude", "--max-drop", "1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy drop <= max_drop: accuracy" in out and "passed" in out
    assert "pruned logits = masked-model logits" in out
    assert main(["export", str(trained_cls_run), "--to", "pruned", "--out", str(tmp_path / "q")]) == 2
    assert "--to pruned needs --sparsity" in capsys.readouterr().err
