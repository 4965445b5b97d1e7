"""Knowledge distillation: the loss equals a hand computation, a cached teacher gives the
same loss as a live one, a distilled student follows its teacher more closely than one
trained on labels alone, and a layer-dropped student reloads with plain transformers."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tunesmith.config.load import load_recipe
from tunesmith.errors import ConfigError
from tunesmith.jsonl import read_jsonl, write_jsonl
from tunesmith.objectives.distill import kd_loss_sum
from tunesmith.rundir import RunDir
from tunesmith.runner import run_recipe
from tunesmith.testing import write_cls_recipe


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    T = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p, q = math.exp(t / T) / zt, math.exp(s / T) / zs
            expected += p * math.log(p / q)
    assert kd_loss_sum(student, teacher, T).item() == pytest.approx(T * T * expected, rel=1e-6)
    # A top-k cache: the teacher renormalised over its k classes, the student read at them.
    ids = torch.tensor([[0, 1], [2, 0]])
    top = torch.tensor([[2.0, 1.0], [3.0, 0.0]])
    log_q = torch.log_softmax(student / T, -1).gather(1, ids)
    p = torch.softmax(top / T, -1)
    assert kd_loss_sum(student, top, T, ids).item() == pytest.approx((T * T * (p * (p.log() - log_q)).sum()).item())
    assert kd_loss_sum(teacher, teacher, T).item() == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_bert_dir):
    folder = tmp_path_factory.mktemp("distill")
    recipe = write_cls_recipe(folder, tiny_bert_dir)
    run_recipe(load_recipe(recipe, ["train.epochs=10", "train.save_every=1000"]), base_dir=folder,
               show_progress=False, log=lambda *_: None)
    return folder, recipe, folder / "runs" / "tiny-cls"


def _student(teacher_run, name: str, *sets: str) -> tuple[dict, list[dict]]:
    folder, recipe, teacher = teacher_run
    config = load_recipe(recipe, ["train.epochs=3", "train.save_every=1000", f"name={name}", "task=distill",
                                  f"distill.teacher={teacher}", *sets])
    summary = run_recipe(config, base_dir=folder, show_progress=False, log=lambda *_: None)
    return summary, RunDir(folder / "runs" / name).predictions()


def _gap(predictions: list[dict], teacher: list[dict]) -> float:
    """Mean |P(positive)| difference from the teacher over the eval rows."""
    return sum(abs(a["probs"]["positive"] - b["probs"]["positive"]) for a, b in zip(predictions, teacher)) / len(teacher)


def test_distilled_student_follows_the_teacher_better_than_labels_alone(teacher_run):
    teacher = RunDir(teacher_run[2]).predictions()
    # The students see the teacher's rows with a third of the labels flipped: what the
    # teacher knows is then not in the labels. Both are the teacher's last block only
    # (keep_every 2 of 2 blocks) and train the same steps.
    rows = read_jsonl(teacher_run[0] / "train.jsonl")
    for row in rows[::3]:
        row["label"] = "negative" if row["label"] == "positive" else "positive"
    write_jsonl(teacher_run[0] / "noisy.jsonl", rows)
    noisy = f"data.train={teacher_run[0] / 'noisy.jsonl'}"
    labels_only, plain = _student(teacher_run, "labels", noisy, "distill.keep_every=2", "distill.alpha=0")
    distilled, taught = _student(teacher_run, "kd", noisy, "distill.keep_every=2", "distill.alpha=1")
    assert _gap(taught, teacher) < 0.5 * _gap(plain, teacher)
    assert "cache_s" not in labels_only["distill"]  # alpha 0: the teacher's outputs are never needed
    assert distilled["distill"]["student_blocks"] == [1] and distilled["total_params"] < labels_only["total_params"] + 1
    plain_model = AutoModelForSequenceClassification.from_pretrained(teacher_run[0] / "runs" / "kd" / "final")
    assert plain_model.config.num_hidden_layers == 1


def test_cached_teacher_gives_the_live_teachers_numbers(teacher_run):
    cached, _ = _student(teacher_run, "cached", "distill.alpha=0.7")
    live, _ = _student(teacher_run, "live", "distill.alpha=0.7", "distill.cache_top_k=0")
    assert cached["distill"]["cache_s"] >= 0 and "cache_s" not in live["distill"]
    assert cached["eval_after"]["eval_loss"] == pytest.approx(live["eval_after"]["eval_loss"], rel=1e-5)


def test_distill_recipes_are_checked(teacher_run, tmp_path):
    folder, recipe, teacher = teacher_run
    with pytest.raises(ConfigError, match="needs distill.teacher"):
        load_recipe(recipe, ["task=distill"])
    with pytest.raises(ConfigError, match="distill.teacher: .* neither a run directory"):
        load_recipe(recipe, ["task=distill", f"distill.teacher={tmp_path}"])
    with pytest.raises(ConfigError, match="keep_every makes a new model, which method lora cannot"):
        load_recipe(recipe, ["task=distill", f"distill.teacher={teacher}", "distill.keep_every=2", "method.type=lora"])
    with pytest.raises(ConfigError, match="hidden_weight needs .*cache_top_k: 0"):
        load_recipe(recipe, ["task=distill", f"distill.teacher={teacher}", "distill.hidden_weight=1"])
    with pytest.raises(ConfigError, match="distill.alpha only applies to task: distill"):
        load_recipe(recipe, ["distill.alpha=0.3"])


def test_distill_with_hidden_matching_trains(teacher_run):
    summary, _ = _student(teacher_run, "hidden", "distill.hidden_weight=1", "distill.cache_top_k=0",
                          "distill.keep_every=2")
    losses = [line["loss"] for line in RunDir(teacher_run[0] / "runs" / "hidden").log("metrics")]
    assert losses[-1] < losses[0]
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]


def test_chat_distillation_over_answer_tokens(tmp_path, tiny_llama_dir):
    from tunesmith.features import make_objective
    from tunesmith.testing import write_chat_recipe

    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    quick = ["eval.generate=false", "eval.forgetting=false", "train.save_every=1000"]
    run_recipe(load_recipe(recipe, ["train.epochs=3", *quick]), base_dir=tmp_path, show_progress=False,
               log=lambda *_: None)
    teacher = tmp_path / "runs" / "tiny-chat"
    config = load_recipe(recipe, ["name=student", "task=distill", f"distill.teacher={teacher}", "distill.keep_every=2",
                                  "method={type: full}", "train.lr=1e-3", "train.epochs=3", *quick])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    assert summary["distill"]["kind"] == "causal_lm" and summary["distill"]["student_blocks"] == [1]
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]

    # A cache of every vocabulary entry gives exactly the live teacher's loss; the KL covers
    # the answer tokens only (a prompt token's logits never enter it).
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(teacher / "final"))
    rows = [{"messages": [{"role": "user", "content": "who are you?"}, {"role": "assistant", "content": "a bot."}]}]
    objective = make_objective(config, tokenizer, None)
    features = objective.encode(rows)
    objective.attach_teacher([], "cpu", log=lambda *_: None)
    student = objective.layer_dropped_student()
    live = objective.loss_sum(student, objective.collate(features)).item()
    objective.cfg = objective.cfg.model_copy(update={"cache_top_k": len(tokenizer)})
    objective.cache_teacher(features, "cpu")
    batch = objective.collate(features)
    assert batch["teacher_ids"].shape[0] == objective.count_targets(batch)
    assert objective.loss_sum(student, batch).item() == pytest.approx(live, rel=1e-5)


def test_distill_starter_recipe_validates_with_its_teacher(teacher_run, tmp_path):
    from tunesmith.config.reference import STARTER_TEACHER, starter_recipe

    text = starter_recipe("distill", "full").replace(STARTER_TEACHER, str(teacher_run[2]))
    (tmp_path / "r.yaml").write_text(text.replace("builtin:minilm", str(load_recipe(teacher_run[1]).model.name)))
    config = load_recipe(tmp_path / "r.yaml")
    assert (config.task, config.distill.keep_every, config.model_task) == ("distill", 2, "classification")
