"""Chat templates and the assistant-only loss mask.

The tokenizer's own chat template renders the conversation, so training sees exactly
the format serving will use. Labels are -100 everywhere except the tokens of assistant
answers (every assistant turn, including its end-of-turn marker so the model learns
to stop).
"""

from __future__ import annotations

from tunesmith.errors import DataError

IGNORE_INDEX = -100


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Prepend ``system_prompt`` unless the chat already starts with a system message."""
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}] + messages


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return (text, character spans of each assistant answer).

    Each span runs from the end of the prompt that precedes an assistant turn (the
    rendering with ``add_generation_prompt``) to the end of the rendering that includes
    that turn. This relies on the template rendering a conversation's prefix as a
    prefix of the text, which holds for the common templates; it is checked, not assumed.
    """
    if tokenizer.chat_template is None:
        raise DataError(
            "The tokenizer has no chat template, so chats cannot be rendered.",
            "Use an instruct/chat model, or a tokenizer folder that includes chat_template.jinja.",
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(prompt) and text.startswith(upto) and len(upto) > len(prompt)):
            raise DataError(
                "The chat template does not render conversation prefixes as text prefixes, so the "
                "assistant-only loss mask cannot be located.",
                "Use a standard chat template (e.g. ChatML).",
            )
        # Trailing whitespace after the end-of-turn marker is never generated (decoding stops
        # at the marker), so it stays masked.
        spans.append((len(prompt), len(upto.rstrip())))
    return text, spans


def tokenize_chat(tokenizer, messages: list[dict], max_length: int) -> dict[str, list[int]]:
    """Token ids and labels for one chat; labels are -100 outside assistant answers.

    Tokens whose characters start inside an assistant span are trained on; templates
    that put a newline after the end-of-turn marker leave that newline masked.
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(
        text,
        add_special_tokens=False,  # the template already wrote BOS/EOS where the model expects them
        return_offsets_mapping=True,
        truncation=True,
        max_length=max_length,
    )
    labels = []
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = any(s <= start < e for s, e in spans) and end > start
        labels.append(token_id if inside else IGNORE_INDEX)
    return {"input_ids": list(enc["input_ids"]), "labels": labels}


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text a model continues to answer the last user turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
