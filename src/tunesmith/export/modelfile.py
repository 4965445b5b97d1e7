"""The Ollama ``Modelfile`` beside an exported GGUF, and the check that its chat template
renders conversations exactly as training did.

Ollama templates are Go templates, so the run's Jinja chat template cannot be copied
over. Each family below has the Go template Ollama would use and a Python rendering that
follows the Go template line by line. The family is chosen by rendering probe
conversations (with and without a system prompt, several turns) through the tokenizer's
Jinja template, as training does, and through each family's rendering: the family whose
token ids match on every probe is written. None matching is an error that names the
first differing token and shows both renderings. (The Python rendering stands in for
Ollama's engine, which is not run here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.data.template_check import PROBE_CHATS, first_difference, serving_prompt_ids
from tunesmith.errors import ModelError



@dataclass(frozen=True)
class Family:
    name: str
    go_template: str
    render: Callable[[str | None, list[dict]], str]  # (system, user/assistant turns) -> prompt text
    stops: tuple[str, ...]


def _chatml(system: str | None, turns: list[dict]) -> str:
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for turn in turns:
        text += f"<|im_start|>{turn['role']}\n{turn['content']}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def _llama3(system: str | None, turns: list[dict]) -> str:
    text = "<|begin_of_text|>"
    if system:
        text += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    for turn in turns:
        text += f"<|start_header_id|>{turn['role']}<|end_header_id|>\n\n{turn['content']}<|eot_id|>"
    return text + "<|start_header_id|>assistant<|end_header_id|>\n\n"


FAMILIES = [
    Family("chatml", """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if or (eq .Role "user") (eq .Role "assistant") }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
""", _chatml, ("<|im_end|>", "<|im_start|>")),
    Family("llama3", """<|begin_of_text|>
{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}
{{- if or (eq .Role "user") (eq .Role "assistant") }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}
{{- end }}<|start_header_id|>assistant<|end_header_id|>

""", _llama3, ("<|eot_id|>", "<|start_header_id|>")),
]


def default_system(tokenizer) -> str | None:
    """The system prompt a chat template inserts when a conversation has none (SmolLM2's
    "You are a helpful AI assistant named SmolLM, ..."), found by rendering one without."""
    for family in FAMILIES:
        text = tokenizer.apply_chat_template(PROBE_CHATS[0], tokenize=False, add_generation_prompt=True)
        for system in _system_candidates(text):
            if family.render(system, PROBE_CHATS[0]) == text:
                return system
    return None


def _system_candidates(text: str) -> list[str | None]:
    candidates: list[str | None] = [None]
    for start, end in (("<|im_start|>system\n", "<|im_end|>"), ("system<|end_header_id|>\n\n", "<|eot_id|>")):
        if start in text:
            candidates.append(text.split(start, 1)[1].split(end, 1)[0])
    return candidates


def matching_family(tokenizer, system: str | None) -> Family:
    """The family whose rendering gives the chat template's token ids on every probe.

    Raises:
        ModelError: none does; names the first differing token of the closest family.
    """
    closest = None
    for family in FAMILIES:
        for turns in PROBE_CHATS:
            expected = serving_prompt_ids(tokenizer, turns, system)
            rendered = family.render(system, turns)
            difference = first_difference(tokenizer, expected, tokenizer(rendered, add_special_tokens=False)["input_ids"])
            if difference:
                closest = closest or (family, difference, tokenizer.decode(expected), rendered)
                break
        else:
            return family
    family, difference, expected, rendered = closest
    raise ModelError(
        f"No Ollama template renders this model's chat template the way training did: the closest "
        f"({family.name}) differs: {difference.describe('the template')}.\n"
        f"training: {expected!r}\ntemplate: {rendered!r}",
        "Serve the GGUF with llama.cpp, which reads the chat template from the file, or write the Modelfile's "
        "TEMPLATE by hand.",
    )


def write_modelfile(out: Path, gguf_name: str, tokenizer, meta: dict) -> dict:
    """Write ``out/Modelfile``; returns its family, system prompt and stop tokens."""
    system = meta.get("system_prompt") or default_system(tokenizer)
    family = matching_family(tokenizer, system)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{family.go_template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in family.stops]
    (out / "Modelfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"template": family.name, "system": system, "stops": list(family.stops),
            "checked": f"{len(PROBE_CHATS)} probe conversations, token ids equal"}
