"""Long multi-turn chats: shorten the history instead of cutting the answer (``data.history``).

A chat longer than ``data.max_length`` tokens is otherwise truncated on the right, which
cuts the last answer (the one the model should learn most from) or removes it entirely.
The guides' advice is to compress the history instead: drop the oldest exchanges first,
keeping the system prompt and the last exchange whole.

An exchange is a user turn and everything after it up to the next user turn (the answer,
and any tool turns between); messages before the first user turn belong to the first one.
"""

from __future__ import annotations

from typing import Callable


def split_exchanges(messages: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """The leading system messages, and the rest grouped into exchanges (oldest first)."""
    start = 0
    while start < len(messages) and messages[start].get("role") == "system":
        start += 1
    exchanges: list[list[dict]] = []
    for message in messages[start:]:
        if message.get("role") == "user" and exchanges and any(m.get("role") == "user" for m in exchanges[-1]):
            exchanges.append([message])
        elif exchanges:
            exchanges[-1].append(message)
        else:
            exchanges.append([message])
    return messages[:start], exchanges


def shorten_history(messages: list[dict], policy, fits: Callable[[list[dict]], bool]) -> tuple[list[dict], int]:
    """``messages`` with old exchanges dropped as ``policy`` says, and how many were dropped.

    ``policy``: "keep" (unchanged), "drop_oldest" (while the chat does not ``fit``, drop its
    oldest exchange; the last one always stays, so a chat whose last exchange alone is too
    long is left to ``data.on_overlength``), or an object with ``last_n_turns`` (keep only
    that many exchanges, every chat, then the over-length policy as usual).
    """
    if policy == "keep":
        return messages, 0
    system, exchanges = split_exchanges(messages)
    if policy == "drop_oldest":
        dropped = 0
        while len(exchanges) > 1 and not fits(system + _flat(exchanges)):
            exchanges = exchanges[1:]
            dropped += 1
        return (system + _flat(exchanges), dropped) if dropped else (messages, 0)
    keep = policy.last_n_turns
    dropped = max(len(exchanges) - keep, 0)
    return (system + _flat(exchanges[-keep:]), dropped) if dropped else (messages, 0)


def history_report(policy, dropped_per_chat: list[int]) -> dict:
    """What the summary counts: chats shortened and exchanges dropped."""
    name = policy if isinstance(policy, str) else f"last_n_turns: {policy.last_n_turns}"
    return {"policy": name, "chats_shortened": sum(1 for d in dropped_per_chat if d),
            "turns_dropped": sum(dropped_per_chat)}


def _flat(exchanges: list[list[dict]]) -> list[dict]:
    return [message for exchange in exchanges for message in exchange]
