"""Train/serve chat-template consistency, checked by token ids.

The most repeated complaint about fine-tuned chat models is that serving renders
conversations differently from training (another template, a lost system prompt, a
tokenizer saved without its template) and answers silently degrade. At the end of
training, the ids training puts before an answer are written for a few probe
conversations into ``final/template_probes.json``; the saved tokenizer, the server at
load and every export render the same conversations their own way and must give the
same ids. A difference is an error naming the first differing token and both renderings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.template import IGNORE_INDEX, render_prompt, tokenize_chat, with_system_prompt
from tunesmith.errors import ModelError

FILE = "template_probes.json"
PROBE_CHATS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one, in 3 words?"}],
    [{"role": "user", "content": "用一句话介绍你自己。"}],
]
PROBE_ANSWER = "Fine, thanks."


def training_prompt_ids(tokenizer, messages: list[dict], system_prompt: str | None) -> list[int]:
    """The ids before the answer when training encodes ``messages`` + an answer (the
    assistant-only loss path: the tokens up to the first trained label)."""
    chat = with_system_prompt(messages, system_prompt) + [{"role": "assistant", "content": PROBE_ANSWER}]
    encoded = tokenize_chat(tokenizer, chat, max_length=1_000_000, last_turn_only=True)
    first = next(k for k, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX)
    return encoded["input_ids"][:first]


def serving_prompt_ids(tokenizer, messages: list[dict], system_prompt: str | None) -> list[int]:
    """The ids the server (and evaluation) feed the model to answer ``messages``."""
    text = render_prompt(tokenizer, with_system_prompt(messages, system_prompt))
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def write_template_probes(final_dir: Path, tokenizer, system_prompt: str | None) -> None:
    """Record training's rendering of the probe conversations in ``final_dir``."""
    probes = [{"messages": chat, "ids": training_prompt_ids(tokenizer, chat, system_prompt)} for chat in PROBE_CHATS]
    (final_dir / FILE).write_text(json.dumps({"system_prompt": system_prompt, "probes": probes}, ensure_ascii=False),
                                  encoding="utf-8")


@dataclass(frozen=True)
class Difference:
    position: int
    in_training: str
    elsewhere: str

    def describe(self, where: str) -> str:
        return (f"the first difference is token {self.position} ({self.in_training} in training, "
                f"{self.elsewhere} in {where})")


def first_difference(tokenizer, trained: list[int], other: list[int]) -> Difference | None:
    """Where two id sequences first differ, with both tokens; None when equal."""
    if trained == other:
        return None
    position = next((k for k, (a, b) in enumerate(zip(trained, other)) if a != b), min(len(trained), len(other)))

    def token(ids):
        return repr(tokenizer.convert_ids_to_tokens(ids[position])) if position < len(ids) else "the end"

    return Difference(position, token(trained), token(other))


def check_template(final_dir: Path, tokenizer, where: str) -> int:
    """Render ``final_dir``'s probe conversations through ``tokenizer``'s serving path and
    compare with training's ids; returns how many were checked (0 for runs without probes).

    Raises:
        ModelError: a rendering differs; names the probe, the first differing token and
            both renderings.
    """
    path = Path(final_dir) / FILE
    if not path.is_file():
        return 0
    recorded = json.loads(path.read_text(encoding="utf-8"))
    for number, probe in enumerate(recorded["probes"], 1):
        if tokenizer.chat_template is None:
            raise ModelError(f"The tokenizer used for {where} has no chat template, but the model was trained with one.",
                             "Load the tokenizer saved in the run's final/ folder (it carries the template).")
        served = serving_prompt_ids(tokenizer, probe["messages"], recorded["system_prompt"])
        trained = probe["ids"]
        difference = first_difference(tokenizer, trained, served)
        if difference is None:
            continue
        raise ModelError(
            f"The chat template used for {where} renders probe conversation {number} differently from training: "
            f"{difference.describe(where)}.\n"
            f"training: {tokenizer.decode(trained)!r}\n{where}: {tokenizer.decode(served)!r}",
            "Serve and export with the tokenizer (and chat template) saved in the run's final/ folder, and the "
            "run's system prompt.",
        )
    return len(recorded["probes"])
