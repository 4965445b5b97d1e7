"""train.optimizer, layer-wise learning rates and label smoothing: each optimizer trains,
its state is what it should be, groups get the rates they should, and label smoothing
changes the training loss only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from tunesmith.config.load import load_recipe
from tunesmith.errors import ConfigError
from tunesmith.objectives.classification import ClassificationObjective
from tunesmith.plan.memory import OPTIMIZER_STATE
from tunesmith.rundir import RunDir
from tunesmith.runner import run_recipe
from tunesmith.testing import base_tokenizer, sentiment_rows, write_cls_recipe
from tunesmith.train.optim import build_optimizer, state_bytes


@pytest.mark.parametrize("optimizer, lr", [("adamw", 5e-3), ("adamw_8bit", 5e-3), ("lion", 1e-3), ("sgd", 3e-2),
                                           ("adafactor", 1e-2)])
def test_each_optimizer_fits_a_batch(optimizer, lr, tiny_bert_dir):
    model = _model(tiny_bert_dir).train()
    objective = ClassificationObjective(base_tokenizer(), ["negative", "positive"], 32)
    batch = objective.collate(objective.encode(sentiment_rows(16, seed=1)))
    opt = build_optimizer(model, lr, 0.0, kind=optimizer)
    losses = []
    for _ in range(40):
        loss = objective.loss_sum(model, batch) / 16
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (optimizer, losses[0], losses[-1])
    copies = {"adamw": 2, "lion": 1, "sgd": 1}.get(optimizer)
    params = sum(p.numel() for p in model.parameters())
    if copies:  # every parameter's moments in fp32
        assert state_bytes(opt) == pytest.approx(copies * params * 4, rel=1e-4)  # (+ AdamW's step counters)
    elif optimizer == "adamw_8bit":  # one byte per moment for tensors of 4,096+ values, fp32 below
        for p in model.parameters():
            assert opt.state[p]["state1"].dtype == (torch.uint8 if p.numel() >= 4096 else torch.float32)
        big = sum(p.numel() for p in model.parameters() if p.numel() >= 4096)
        eight_bit = big * OPTIMIZER_STATE["adamw_8bit"]  # what `tunesmith plan` counts per parameter
        assert state_bytes(opt) == pytest.approx(eight_bit + 2 * (params - big) * 4, rel=0.01)
    else:  # factored rows and columns: far below one copy
        assert 0 < state_bytes(opt) < 0.2 * params * 4


def test_the_optimizer_runs_through_a_recipe(tmp_path, tiny_bert_dir):
    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    config = load_recipe(recipe, ["train.optimizer=lion", "train.lr=2e-3", "train.epochs=6", "train.save_every=1000"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    losses = [line["loss"] for line in RunDir(tmp_path / "runs" / "tiny-cls").log("metrics")]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert summary["train"]["optimizer"] == "lion"
    assert summary["train"]["optimizer_state_mb"] == pytest.approx(summary["trainable_params"] * 4 / 2**20, rel=1e-3)


def _model(tiny_bert_dir):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)


def test_lion_step_is_the_sign_of_the_gradient(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, 1e-3, 0.0, kind="lion")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    for n, p in model.named_parameters():  # first step: m = 0, so the update is lr * sign(g)
        torch.testing.assert_close(p.detach(), before[n] - 1e-3 * grads[n].sign())


def test_layer_lr_decay_gives_each_block_its_rate(tiny_bert_dir):
    model = _model(tiny_bert_dir)  # 2 blocks
    optimizer = build_optimizer(model, 1.0, 0.0, layer_lr_decay=0.5)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rate[id(model.bert.encoder.layer[1].attention.self.query.weight)] == 1.0
    assert rate[id(model.bert.encoder.layer[0].attention.self.query.weight)] == 0.5
    assert rate[id(model.bert.embeddings.word_embeddings.weight)] == 0.25
    assert rate[id(model.classifier.weight)] == 1.0
    assert state_bytes(optimizer) == 0  # no step yet


def test_adamw_8bit_first_step_matches_adamw(tiny_bert_dir):
    """The first AdamW step is lr * g / (|g| + eps) per value; 8-bit moments change it by
    their quantisation error only."""
    updates = {}
    for kind in ("adamw", "adamw_8bit"):
        model = _model(tiny_bert_dir)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = build_optimizer(model, 1e-3, 0.0, kind=kind)
        torch.manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()
        updates[kind] = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    assert updates["adamw"].abs().mean() == pytest.approx(1e-3, rel=1e-3)
    assert (updates["adamw_8bit"] - updates["adamw"]).abs().mean() < 0.05 * 1e-3


def test_adamw_8bit_without_bitsandbytes_says_how_to_install_it(tiny_bert_dir, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="adamw_8bit needs the bitsandbytes package") as error:
        build_optimizer(_model(tiny_bert_dir), 1e-3, 0.0, kind="adamw_8bit")
    assert "tunesmith[qlora]" in error.value.fix


def test_optimizer_settings_are_checked(tmp_path, tiny_bert_dir):
    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    with pytest.raises(ConfigError, match="train.betas applies to adamw, adamw_8bit and lion, not sgd"):
        load_recipe(recipe, ["train.optimizer=sgd", "train.betas=[0.9, 0.99]"])
    with pytest.raises(ConfigError, match="train.momentum applies to sgd"):
        load_recipe(recipe, ["train.momentum=0.5"])
    with pytest.raises(ConfigError, match="unknown key 'train.optimiser'"):
        load_recipe(recipe, ["train.optimiser=lion"])


def test_label_smoothing_changes_the_training_loss_only(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    objective = ClassificationObjective(base_tokenizer(), ["a", "b"], 32, label_smoothing=0.2)
    batch = objective.collate(objective.encode([{"text": "good film", "label": "a"}, {"text": "bad", "label": "b"}]))
    model.train()
    torch.manual_seed(1)
    smoothed = objective.loss_sum(model, batch)
    torch.manual_seed(1)
    logits = model(**objective.model_inputs(batch)).logits
    assert smoothed.item() == pytest.approx(F.cross_entropy(logits, batch["labels"], reduction="sum",
                                                             label_smoothing=0.2).item(), rel=1e-5)
    model.eval()
    logits = model(**objective.model_inputs(batch)).logits
    plain = F.cross_entropy(logits, batch["labels"], reduction="sum").item()
    assert objective.loss_sum(model, batch).item() == pytest.approx(plain, rel=1e-5)
    assert objective.outputs(model, objective.encode([{"text": "good film", "label": "a"}]), 4, "cpu")["loss"] == \
        pytest.approx(F.cross_entropy(logits[:1], batch["labels"][:1]).item(), rel=1e-4)


def test_the_plan_counts_the_chosen_optimizers_state(tiny_llama_dir):
    from tunesmith.config.schema import RecipeConfig
    from tunesmith.plan.memory import estimate_memory
    from tunesmith.plan.trace import model_config, trace_training

    def plan(optimizer):
        config = RecipeConfig.model_validate({
            "name": "p", "task": "causal_lm", "model": {"name": str(tiny_llama_dir)},
            "data": {"train": "x.jsonl", "max_length": 24}, "method": {"type": "full"},
            "train": {"batch_size": 3, "optimizer": optimizer}})
        trace = trace_training(config, model_config(str(tiny_llama_dir)), 3, 24, 23, count_work=False)
        return estimate_memory(trace, config, baseline_bytes=0).components["optimizer"]

    assert plan("sgd") * 2 == plan("adamw") and plan("lion") == plan("sgd") and plan("adafactor") < plan("sgd") / 50
