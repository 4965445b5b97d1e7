"""Chat dialects: the row layouts accepted for chat data, all turned into OpenAI messages.

* OpenAI ``messages``: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``
  (in a CSV cell, the same list as JSON text);
* sharegpt ``conversations`` with ``from``/``value`` turns;
* alpaca ``instruction``/``input``/``output`` with optional ``system`` and ``history``.

Every check reports into the row's :class:`~tunesmith.data.validate.RowErrors`, naming
the field (``messages[2].role``) so a bad row is fixed without guessing.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.data.formats import Row
from tunesmith.data.validate import RowErrors, field_list, required_text, type_name

ROLES = ("system", "user", "assistant")
# sharegpt speakers -> chat roles (unknown speakers are reported as unknown roles)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "system": "system"}


def chat_record(row: Row, errors: RowErrors, from_csv: bool, messages_field: str = "messages",
                require_assistant: bool = True) -> dict | None:
    """One chat row, in whichever dialect it is written, as ``{"messages": [...]}``; None
    (with the problems reported to ``errors``) when it is invalid. ``require_assistant``
    False accepts prompts without an answer (evaluation prompts; "prompt" shape)."""
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with 'messages' (or alpaca 'instruction'/"
                              f"'output'), got {type_name(obj)}")
        return None
    if messages_field != "messages" and messages_field in obj:
        turns = obj[messages_field]
        # A renamed column holds either OpenAI messages or sharegpt turns; the keys tell which.
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return _sharegpt_record(turns, row, errors)
        obj = {"messages": turns}
    if "messages" in obj:
        messages = obj["messages"]
        if from_csv and isinstance(messages, str):
            # A CSV cell can only hold text, so accept the messages list as JSON there.
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as exc:
                errors.add(row.where, f"field 'messages' is not a valid JSON list ({exc.msg})")
                return None
        return validate_messages(messages, row, errors, require_assistant=require_assistant)
    if "conversations" in obj:
        return _sharegpt_record(obj["conversations"], row, errors)
    if "instruction" in obj or "output" in obj:
        return _alpaca_record(obj, row, errors)
    errors.add(row.where, "field 'messages' is missing (and no sharegpt 'conversations' or alpaca "
                          f"'instruction'/'output' either); fields are: {field_list(obj)}")
    return None


def _sharegpt_record(turns: Any, row: Row, errors: RowErrors) -> dict | None:
    """sharegpt ``conversations: [{"from": "human"|"gpt"|"system", "value": ...}]`` as messages."""
    if not isinstance(turns, list):
        errors.add(row.where, f"field 'conversations' must be a list, got {type_name(turns)}")
        return None
    messages = []
    for turn in turns:
        if isinstance(turn, dict) and ("from" in turn or "value" in turn):
            speaker = turn.get("from")
            role = SHAREGPT_ROLES.get(speaker.lower(), speaker) if isinstance(speaker, str) else speaker
            message = {"content": turn["value"]} if "value" in turn else {}
            messages.append({"role": role, **message} if "from" in turn else message)
        else:
            messages.append(turn)
    return validate_messages(messages, row, errors, name="conversations", role_key="from", content_key="value")


def validate_messages(messages: Any, row: Row, errors: RowErrors, name: str = "messages",
                      role_key: str = "role", content_key: str = "content",
                      require_assistant: bool = True) -> dict | None:
    """``{"messages": [...]}`` when ``messages`` is a valid turn list, else None with every
    problem reported; ``name``/``role_key``/``content_key`` are the user's own field names."""
    if not isinstance(messages, list):
        errors.add(row.where, f"field {name!r} must be a list, got {type_name(messages)}")
        return None
    if not messages:
        errors.add(row.where, f"field {name!r} is empty")
        return None
    ok = True
    out = []
    for i, msg in enumerate(messages):
        field = f"{name}[{i}]"
        if not isinstance(msg, dict):
            errors.add(row.where, f"field {field!r} must be an object with {role_key!r} and {content_key!r}, "
                                  f"got {type_name(msg)}"); ok = False
            continue
        role, content = msg.get("role"), msg.get("content")
        if "role" not in msg:
            errors.add(row.where, f"field '{field}.{role_key}' is missing"); ok = False
        elif role not in ROLES:
            errors.add(row.where, f"field '{field}.{role_key}' has unknown role {role!r} "
                                  f"(allowed: {', '.join(ROLES)})"); ok = False
        if "content" not in msg:
            errors.add(row.where, f"field '{field}.{content_key}' is missing"); ok = False
        elif not isinstance(content, str):
            errors.add(row.where, f"field '{field}.{content_key}' must be a string, "
                                  f"got {type_name(content)}"); ok = False
        elif not content.strip():
            errors.add(row.where, f"field '{field}.{content_key}' is empty"); ok = False
        if ok:
            out.append({"role": role, "content": content})
    for i in range(1, len(out) if ok else 0):
        if out[i]["role"] == out[i - 1]["role"] and out[i]["role"] != "system":
            # Two user (or assistant) turns in a row: usually a lost turn, and templates reject it.
            errors.add(row.where, f"field '{name}[{i}].{role_key}' is a second {out[i]['role']!r} turn in a row")
            ok = False
    if ok and require_assistant and not any(m["role"] == "assistant" for m in out):
        # Chat training learns from assistant turns only; without one the row teaches nothing.
        errors.add(row.where, f"field {name!r} has no assistant turn")
        ok = False
    return {"messages": out} if ok else None


def _alpaca_record(obj: dict, row: Row, errors: RowErrors) -> dict | None:
    instruction, output = (required_text(obj, key, row, errors) for key in ("instruction", "output"))
    ok = instruction is not None and output is not None
    extra, ok_input = _optional_str(obj, "input", row, errors)
    system, ok_system = _optional_str(obj, "system", row, errors)
    history, ok_history = _alpaca_history(obj.get("history"), row, errors)
    if not (ok and ok_input and ok_system and ok_history):
        return None
    user = instruction + (f"\n\n{extra}" if extra else "")
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages += [{"role": "user", "content": user},
                 {"role": "assistant", "content": output}]
    return {"messages": messages}


def _alpaca_history(history: Any, row: Row, errors: RowErrors) -> tuple[list[tuple[str, str]], bool]:
    """Alpaca's optional ``history``: earlier ``[instruction, output]`` pairs of the same chat."""
    if history is None:
        return [], True
    pairs = history if isinstance(history, list) else None
    ok = pairs is not None and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p) for p in pairs)
    if not ok:
        errors.add(row.where, "field 'history' must be a list of [instruction, output] string pairs")
        return [], False
    return [(q.strip(), a.strip()) for q, a in pairs], True


def _optional_str(obj: dict, key: str, row: Row, errors: RowErrors) -> tuple[str, bool]:
    value = obj.get(key)
    if value is None:
        return "", True
    if not isinstance(value, str):
        errors.add(row.where, f"field {key!r} must be a string, got {type_name(value)}")
        return "", False
    return value.strip(), True
