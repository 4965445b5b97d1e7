"""The task registry: every consumer reads one table, and every row shape survives the data steps."""

from __future__ import annotations

import json
import typing

import pytest

from tunesmith.config.schema import RecipeConfig, Task
from tunesmith.data.clean import clean_rows, row_text
from tunesmith.data.dedup import deduplicate, leakage, row_key
from tunesmith.data.sources import SHAPES
from tunesmith.data.validate import load_file
from tunesmith.eval.metrics import METRICS
from tunesmith.objectives.tasks import TASKS, task_spec


def test_the_schema_offers_exactly_the_registered_tasks():
    assert set(typing.get_args(Task)) == set(TASKS)


def test_every_task_names_known_metrics_a_shape_and_a_head():
    for name, spec in TASKS.items():
        if name == "distill":  # its shape and head are its teacher's (test_distill)
            assert (spec.shape, spec.head) == ("teacher", "teacher")
            continue
        assert spec.shape in SHAPES, name
        assert spec.head in ("classification", "causal_lm"), name
        assert spec.metrics and all(m in METRICS for m in spec.metrics), name
    assert task_spec("classification").headline == "accuracy"
    assert task_spec("pretrain").headline == task_spec("causal_lm").headline == "eval_loss"


def test_objectives_come_from_the_registry(tiny_bert_dir):
    from transformers import AutoTokenizer

    from tunesmith.objectives.causal_lm import CausalLMObjective
    from tunesmith.objectives.classification import ClassificationObjective
    from tunesmith.objectives.pretrain import PretrainObjective
    from tunesmith.features import make_objective

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    expected = {"classification": ClassificationObjective, "causal_lm": CausalLMObjective, "pretrain": PretrainObjective}
    for task, cls in expected.items():
        config = RecipeConfig.model_validate({"name": "x", "task": task, "model": {"name": "m"},
                                              "data": {"train": "a.jsonl"}, "method": {"type": "prompt"}})
        objective = make_objective(config, tokenizer, ["a", "b"])
        assert type(objective) is cls
        if task != "classification":  # prompt methods' virtual tokens rule out padding-free rows
            assert objective.padding_free is False
    assert config.model_task == "causal_lm"


PREFERENCE_ROWS = [
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
    {"prompt": "name a  colour.", "chosen": "blue.", "rejected": "seven."},  # same after normalising
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Loud."},  # another pair for the prompt
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
     "rejected": [{"role": "assistant", "content": "Go away."}]},
]
ROWS = {
    "classification": [{"text": "A fine film.", "label": "pos"}, {"text": "A fine film.", "label": "pos",
                                                                   "text_pair": "Or not."}],
    "chat": [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}],
    "text": [{"text": "Once upon a time."}],
    "preference": PREFERENCE_ROWS,
    # evaluation prompts: a reference answer is optional
    "prompt": [{"messages": [{"role": "user", "content": "Name a colour."}]},
               {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_clean_and_dedup_take_every_shape_the_validators_accept(shape, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[shape]), encoding="utf-8")
    rows, rejects = load_file(path, str(path), shape)
    assert rejects == [] and len(rows) == len(ROWS[shape])
    from tunesmith.config.schema import CleanConfig, DedupConfig

    cleaned, report = clean_rows(rows, CleanConfig(min_chars=1))
    assert report["rows_out"] == len(rows)
    kept, _ = deduplicate(cleaned, DedupConfig(near=True))
    assert kept and all(row_text(r) for r in kept)
    leaked, _ = leakage(kept, kept, near=True, threshold=0.8, ngram=5)
    assert leaked == list(range(len(kept)))


def test_preference_rows_dedup_on_prompt_chosen_and_rejected():
    from tunesmith.config.schema import DedupConfig

    kept, report = deduplicate(PREFERENCE_ROWS, DedupConfig())
    assert report["exact_duplicates"] == 1
    assert kept == [PREFERENCE_ROWS[0], PREFERENCE_ROWS[2], PREFERENCE_ROWS[3]]
    assert row_key(PREFERENCE_ROWS[0]) != row_key(PREFERENCE_ROWS[2])


def test_sentence_pairs_with_another_second_text_are_not_duplicates():
    a, b = {"text": "Same.", "text_pair": "One.", "label": "x"}, {"text": "Same.", "text_pair": "Two.", "label": "x"}
    assert row_key(a) != row_key(b)
    assert row_key(a) == row_key(dict(a, text_pair="one."))


def test_cleaning_reaches_every_text_of_a_preference_row():
    from tunesmith.config.schema import CleanConfig

    row = {"prompt": "Mail me at a@b.com", "chosen": [{"role": "assistant", "content": "Call 555-123-4567"}],
           "rejected": "  spaced   out  "}
    (cleaned,), report = clean_rows([row], CleanConfig(mask_pii=True))
    assert cleaned == {"prompt": "Mail me at [EMAIL]", "chosen": [{"role": "assistant", "content": "Call [PHONE]"}],
                       "rejected": "spaced out"}
    assert report["changed"] == 1
