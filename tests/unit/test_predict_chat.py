"""``tunesmith predict`` (batch answers and labels) and ``tunesmith chat`` (streamed turns,
history, /reset, /system, /params)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_jsonl
from tunesmith.cli import main
from tunesmith.errors import DataError
from tunesmith.eval.targets import load_target
from tunesmith.synthetic import make_lora_run


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_llama_dir):
    return make_lora_run(tmp_path_factory.mktemp("chat") / "run", tiny_llama_dir, "causal_lm", seed=2,
                         system_prompt="be brief.")


def _greedy(target, messages, max_new_tokens):
    """One conversation answered by plain generate, rendered the serving way."""
    from tunesmith.data.template import render_prompt, with_system_prompt
    from tunesmith.eval.decode import end_ids

    tokenizer = target.tokenizer
    text = render_prompt(tokenizer, with_system_prompt(messages, target.system_prompt))
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stops = end_ids(target.model, tokenizer)
    with torch.no_grad():
        out = target.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=sorted(stops), pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
    return tokenizer.decode(new[:cut], skip_special_tokens=True).strip()


def test_predict_answers_every_chat_row_in_order(chat_run, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"tell me about {topic}"}]} for topic in
            ("the sea", "a long and winding road", "cats")]
    # ShareGPT rows work too; a final answer is kept as the reference
    rows.append({"conversations": [{"from": "human", "value": "name a colour"}, {"from": "gpt", "value": "red"}]})
    write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["predict", str(chat_run), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl"), "--max-new-tokens", "8", "--no-progress"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in out] == [0, 1, 2, 3]
    assert out[3]["messages"] == [{"role": "user", "content": "name a colour"}] and out[3]["reference"] == "red"
    assert "reference" not in out[0]
    target = load_target(str(chat_run))
    for row in out:
        assert row["prediction"] == _greedy(target, row["messages"], 8)
        assert row["finish"] in ("stop", "length") and row["tokens"] <= 8
    assert len({row["prediction"] for row in out}) > 1


def test_predict_names_the_bad_row_before_running(chat_run, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}, {"question": "hi"}])
    with pytest.raises(DataError, match="line 2"):
        from tunesmith.eval.decode import DecodeSettings
        from tunesmith.predict import predict_file

        predict_file(str(chat_run), tmp_path / "in.jsonl", tmp_path / "out.jsonl", DecodeSettings(), show_progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_labels_texts_with_the_models_probabilities(tmp_path, tiny_bert_dir):
    run = make_lora_run(tmp_path / "cls", tiny_bert_dir, "classification", seed=1, labels=["negative", "positive"])
    texts = ["a fine film", "dull and long", "the best thing i saw this year", "no"]
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    assert main(["predict", str(run), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--batch-size", "3", "--no-progress"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    target = load_target(str(run))
    for row, text in zip(out, texts):
        enc = target.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(target.model(**enc).logits[0], -1)
        assert row["text"] == text
        assert row["probabilities"]["positive"] == pytest.approx(float(probs[1]), abs=1e-5)
        assert row["label"] == ["negative", "positive"][int(probs.argmax())]
        assert row["probability"] == max(row["probabilities"].values())


def test_chat_streams_keeps_history_and_obeys_commands(chat_run):
    from tunesmith.chat import ChatSession, run_chat

    target = load_target(str(chat_run))
    session = ChatSession(target)
    session.params.max_new_tokens = 8
    lines = iter(["hello there", "and then?", "/reset", "hello there", "/system none", "/params max_new_tokens=3",
                  "/params bogus=1", "/params top_p=2", "hello there", "/exit", "never read"])
    written: list[str] = []
    replies: list[str] = []
    real_reply = session.reply

    def recording_reply(text, write):
        replies.append(real_reply(text, write))
        return replies[-1]

    session.reply = recording_reply
    run_chat(session, read=lambda prompt: next(lines), write=lambda text="", **_: written.append(text))
    first, second, after_reset, terse = replies
    assert first == after_reset == _greedy(target, [{"role": "user", "content": "hello there"}], 8)
    assert second == _greedy(target, [{"role": "user", "content": "hello there"}, {"role": "assistant",
                                      "content": first}, {"role": "user", "content": "and then?"}], 8)
    assert "".join(written).count(first) >= 2  # the answers were streamed out
    target.system_prompt = None  # /system none: the conversation has no system prompt any more
    hello = {"role": "user", "content": "hello there"}
    assert terse == _greedy(target, [hello, {"role": "assistant", "content": after_reset}, hello], 3)
    assert len(target.tokenizer(terse, add_special_tokens=False)["input_ids"]) <= 3
    assert any("Unknown setting 'bogus=1'" in w for w in written)
    assert any("top_p=2 is out of range" in w for w in written)
    assert session.history[-1]["content"] == terse and len(session.history) == 4  # "never read" was not
