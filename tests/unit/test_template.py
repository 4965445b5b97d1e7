"""Chat rendering and the assistant-only loss mask, checked token by token."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunesmith.data.template import (
    IGNORE_INDEX,
    assistant_spans,
    render_prompt,
    tokenize_chat,
    with_system_prompt,
)
from tunesmith.errors import DataError
from tunesmith.models.load import resolve_model_source

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello friend"},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four"},
]
SMOLLM2 = Path("~/.cache/tunesmith/models/smollm2-135m").expanduser()


@pytest.fixture(scope="module")
def base_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm"))


@pytest.fixture
def tokenizer(base_tokenizer):
    tok = base_tokenizer.__class__.from_pretrained(base_tokenizer.name_or_path)
    tok.chat_template = CHATML
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def _tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_mask_keeps_exactly_the_assistant_answers(tokenizer):
    out = tokenize_chat(tokenizer, CHAT, max_length=512)
    # (token, trained?) -- the MiniLM tokenizer lowercases and drops whitespace
    expected = [
        ("<|im_start|>", False), ("system", False), ("be", False), ("brief", False), (".", False),
        ("<|im_end|>", False),
        ("<|im_start|>", False), ("user", False), ("hi", False), ("there", False), ("<|im_end|>", False),
        ("<|im_start|>", False), ("assistant", False), ("hello", True), ("friend", True), ("<|im_end|>", True),
        ("<|im_start|>", False), ("user", False), ("what", False), ("is", False), ("two", False), ("plus", False),
        ("two", False), ("?", False), ("<|im_end|>", False),
        ("<|im_start|>", False), ("assistant", False), ("four", True), ("<|im_end|>", True),
    ]  # fmt: skip
    assert _tokens(tokenizer, out["input_ids"]) == [t for t, _ in expected]
    assert len(out["labels"]) == len(out["input_ids"])
    for (token, trained), token_id, label in zip(expected, out["input_ids"], out["labels"]):
        assert label == (token_id if trained else IGNORE_INDEX), token
    # no [CLS]/[SEP]: the template decides where special tokens go
    assert tokenizer.cls_token_id not in out["input_ids"]


def test_assistant_spans_cover_answer_and_end_marker(tokenizer):
    text, spans = assistant_spans(tokenizer, CHAT)
    assert [text[s:e] for s, e in spans] == ["Hello friend<|im_end|>", "Four<|im_end|>"]
    assert text.endswith("Four<|im_end|>\n")


def test_truncation_to_max_length(tokenizer):
    full = tokenize_chat(tokenizer, CHAT, max_length=512)
    cut = tokenize_chat(tokenizer, CHAT, max_length=15)
    assert len(full["input_ids"]) == 29
    assert cut["input_ids"] == full["input_ids"][:15]
    assert cut["labels"] == full["labels"][:15]
    assert _tokens(tokenizer, [i for i in cut["labels"] if i != IGNORE_INDEX]) == ["hello", "friend"]


def test_with_system_prompt_adds_or_keeps():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert with_system_prompt(chat, "Be kind.") == [{"role": "system", "content": "Be kind."}] + chat
    assert with_system_prompt(CHAT, "Be kind.") == CHAT  # an existing system message wins
    assert with_system_prompt(chat, None) is chat
    assert with_system_prompt(chat, "Be kind.") is not chat and len(chat) == 2  # input not mutated


def test_tokenizer_without_chat_template_is_data_error(base_tokenizer):
    assert base_tokenizer.chat_template is None
    with pytest.raises(DataError, match="no chat template"):
        tokenize_chat(base_tokenizer, CHAT, max_length=64)


def test_template_that_is_not_prefix_stable_is_data_error(tokenizer):
    tokenizer.chat_template = CHATML.replace("for m in messages", "for m in messages | reverse")
    with pytest.raises(DataError, match="prefix"):
        tokenize_chat(tokenizer, CHAT, max_length=64)


def test_render_prompt_ends_with_generation_prompt(tokenizer):
    prompt = render_prompt(tokenizer, CHAT[:4])
    assert prompt.endswith("<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


@pytest.mark.skipif(not SMOLLM2.is_dir(), reason="converted SmolLM2 not in the cache")
def test_mask_with_real_smollm2_tokenizer():
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    chat = CHAT[1:]  # no system message: the template adds its default one
    out = tokenize_chat(tok, chat, max_length=512)
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])

    trained = [i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE_INDEX]
    answer_ids = tok("Hello friend", add_special_tokens=False)["input_ids"] + [im_end]
    answer_ids += tok("Four", add_special_tokens=False)["input_ids"] + [im_end]
    assert trained == answer_ids
    for token_id, label in zip(out["input_ids"], out["labels"]):
        assert label in (token_id, IGNORE_INDEX)

    # the default system prompt (first turn, up to its end marker) is entirely masked
    first_end = out["input_ids"].index(im_end)
    assert out["input_ids"][0] == im_start
    assert tok.decode(out["input_ids"][: first_end + 1]).startswith("<|im_start|>system\nYou are a helpful")
    assert all(label == IGNORE_INDEX for label in out["labels"][: first_end + 2])
    # the newline after an assistant's end marker is not trained (generation stops at the marker)
    last_answer_end = len(out["input_ids"]) - 1 - out["input_ids"][::-1].index(im_end)
    assert out["labels"][last_answer_end] == im_end
    assert all(label == IGNORE_INDEX for label in out["labels"][last_answer_end + 1 :])
    assert len(out["input_ids"]) > last_answer_end + 1  # there is such a newline to check


@pytest.mark.parametrize("name", ["chatml", "zephyr", "llama3", "alpaca"])
def test_named_templates_mask_exactly_the_answers(name, tiny_llama_dir):
    from tunesmith.data.template import NAMED_TEMPLATES, resolve_template
    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    tok.chat_template = resolve_template(name)
    assert tok.chat_template == NAMED_TEMPLATES[name]
    chat = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello there"}, {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "see you"}]
    out = tokenize_chat(tok, chat, max_length=512)
    trained = tok.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != -100])
    assert "hello there" in trained and "see you" in trained
    assert "hi" not in trained.replace("hello there", "") and "be brief" not in trained
    last = tokenize_chat(tok, chat, max_length=512, last_turn_only=True)
    only_last = tok.decode([t for t, label in zip(last["input_ids"], last["labels"]) if label != -100])
    assert "see you" in only_last and "hello there" not in only_last


def test_templates_from_files_text_or_unknown_names(tmp_path):
    from tunesmith.data.template import resolve_template
    from tunesmith.errors import ConfigError

    (tmp_path / "mine.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert resolve_template("mine.jinja", tmp_path).startswith("{% for m")
    assert resolve_template("{{ messages[0]['content'] }}") == "{{ messages[0]['content'] }}"
    with pytest.raises(ConfigError, match="Unknown chat template 'vicuna'"):
        resolve_template("vicuna")
    with pytest.raises(ConfigError, match="not found"):
        resolve_template("missing.jinja", tmp_path)


def test_the_recipe_template_is_saved_with_the_run(chat_recipe, tmp_path):
    from transformers import AutoTokenizer

    from tunesmith.cli import main
    from tunesmith.data.template import NAMED_TEMPLATES

    assert main(["train", str(chat_recipe), "--set", "data.chat_template=zephyr", "--set", "data.loss_on=last_answer",
                 "--set", "train.epochs=1"]) == 0
    saved = AutoTokenizer.from_pretrained(tmp_path / "runs" / "tiny-chat" / "final")
    assert saved.chat_template == NAMED_TEMPLATES["zephyr"]
