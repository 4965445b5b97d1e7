"""Chat templates and the assistant-only loss mask.

The tokenizer's own chat template renders the conversation, so training sees exactly
the format serving will use. Labels are -100 everywhere except the tokens of assistant
answers (every assistant turn, including its end-of-turn marker so the model learns
to stop).
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import ConfigError, DataError

IGNORE_INDEX = -100

# Named templates for models whose tokenizer has none (or to train a new format). Each
# renders a conversation's prefix as a prefix of its text, which the loss mask relies on.
NAMED_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "zephyr": (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "alpaca": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
        "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
        "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
}


def resolve_template(value: str, base_dir: Path | None = None) -> str:
    """A chat template from a name (``chatml``, ``zephyr``, ``llama3``, ``alpaca``), a
    ``.jinja`` file (relative to the recipe), or Jinja text itself.

    Raises:
        ConfigError: a name that is neither known nor a file nor Jinja.
    """
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    if value.endswith((".jinja", ".j2", ".txt")):
        path = Path(value) if Path(value).is_absolute() or base_dir is None else Path(base_dir) / value
        if not path.is_file():
            raise ConfigError(f"Chat template file {value!r} not found (looked at {path}).")
        return path.read_text(encoding="utf-8")
    if "{%" in value or "{{" in value:
        return value
    raise ConfigError(f"Unknown chat template {value!r}.",
                      f"Use one of {', '.join(NAMED_TEMPLATES)}, a .jinja file, or the Jinja text itself.")


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


def tokenize_chat(tokenizer, messages: list[dict], max_length: int, last_turn_only: bool = False) -> dict[str, list[int]]:
    """Token ids and labels for one chat; labels are -100 outside assistant answers
    (outside the last answer with ``last_turn_only``: earlier answers are then context).

    Tokens whose characters start inside an assistant span are trained on; templates
    that put a newline after the end-of-turn marker leave that newline masked.
    """
    text, spans = assistant_spans(tokenizer, messages)
    if last_turn_only:
        spans = spans[-1:]
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


def answer_ids(tokenizer, prompt, answer, system_prompt: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a prompt and of one answer to it, as a reward model reads them
    (training and serving render alike). ``prompt``/``answer`` are strings or message lists.

    Chat models: the conversation through the chat template (with ``system_prompt`` unless
    the prompt has its own); the answer part is what the whole conversation adds after the
    rendered prompt. Encoder models: the sentence pair ``[CLS] prompt [SEP] answer [SEP]``.
    """
    if tokenizer.chat_template:
        prompt_messages = with_system_prompt(_as_messages(prompt, "user"), system_prompt)
        head = render_prompt(tokenizer, prompt_messages)
        whole = tokenizer.apply_chat_template(prompt_messages + _as_messages(answer, "assistant"), tokenize=False)
        if not whole.startswith(head):  # a template that renders turns differently once answered
            head = ""
        return (tokenizer(head, add_special_tokens=False)["input_ids"],
                tokenizer(whole[len(head) :], add_special_tokens=False)["input_ids"])
    pair = tokenizer(as_text(prompt), as_text(answer))
    ids, segments = pair["input_ids"], pair.get("token_type_ids")
    # The answer is the second segment: it starts where the segment ids turn to 1.
    start = segments.index(1) if segments and 1 in segments else len(ids) // 2
    return ids[:start], ids[start:]


def fit_answer(prompt_ids: list[int], answer_ids: list[int], max_length: int) -> list[int]:
    """Prompt + answer in at most ``max_length`` tokens: the prompt loses its start first
    (the answer being judged stays whole); an answer longer than ``max_length`` keeps its start."""
    room = max_length - len(answer_ids)
    if room <= 0:
        return answer_ids[:max_length]
    return prompt_ids[len(prompt_ids) - min(room, len(prompt_ids)) :] + answer_ids


def _as_messages(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def as_text(value) -> str:
    """A message list as plain text (encoder models have no chat template)."""
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)
