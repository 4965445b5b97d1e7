"""``tunesmith chat``: talk to a run or a model in the terminal, tokens streamed as written.

Each turn is rendered as in training and serving (the chat template and the run's system
prompt) with the whole history, and answered with ``generate`` and a token streamer,
stopping at the template's end of turn. Commands: ``/reset`` forgets the history,
``/system TEXT`` sets the system prompt (``/system`` alone shows it, ``/system none``
drops it), ``/params key=value ...`` sets ``temperature``, ``top_p`` and
``max_new_tokens`` (alone it shows them), ``/exit`` (or end of input) leaves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

import torch

from tunesmith.errors import ConfigError

HELP = "commands: /reset, /system [TEXT|none], /params [temperature=T top_p=P max_new_tokens=N], /exit"


@dataclass
class ChatParams:
    """Sampling settings of a chat session (temperature 0 is greedy)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256

    def update(self, assignments: list[str]) -> None:
        """Apply ``key=value`` words; an unknown key or bad value is a ConfigError naming it."""
        types = {f.name: f.type for f in fields(self)}
        for word in assignments:
            key, _, value = word.partition("=")
            if key not in types or not value:
                raise ConfigError(f"Unknown setting '{word}'.", f"Use key=value with key one of: {', '.join(types)}.")
            try:
                number = int(value) if key == "max_new_tokens" else float(value)
            except ValueError:
                raise ConfigError(f"'{value}' is not a number for {key}.") from None
            if number < 0 or (key == "top_p" and not 0 < number <= 1) or (key == "max_new_tokens" and number < 1):
                raise ConfigError(f"{key}={value} is out of range.")
            setattr(self, key, number)

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


class ChatSession:
    """A conversation with a loaded target (see ``eval.targets.load_target``)."""

    def __init__(self, target, device="cpu", params: ChatParams | None = None):
        if target.task != "causal_lm" or not target.tokenizer.chat_template:
            raise ConfigError(f"{target.name} is not a chat model (a {target.task} without a chat template).",
                              "Chat with a causal-LM run or an instruct model; label texts with 'tunesmith predict'.")
        self.target, self.device = target, device
        self.params = params or ChatParams()
        self.system = target.system_prompt
        self.history: list[dict] = []

    def reply(self, text: str, write=print) -> str:
        """Answer ``text`` after the history; ``write`` receives the answer piece by piece."""
        from transformers import TextIteratorStreamer

        from tunesmith.data.template import render_prompt, with_system_prompt
        from tunesmith.eval.decode import end_ids

        tokenizer, model = self.target.tokenizer, self.target.model
        messages = with_system_prompt(self.history + [{"role": "user", "content": text}], self.system)
        ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False, return_tensors="pt")
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = ({"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
                    if self.params.temperature == 0 else
                    {"do_sample": True, "temperature": self.params.temperature, "top_p": self.params.top_p, "top_k": 0})
        arguments = dict(input_ids=ids["input_ids"].to(self.device), attention_mask=ids["attention_mask"].to(self.device),
                         max_new_tokens=self.params.max_new_tokens, eos_token_id=sorted(end_ids(model, tokenizer)),
                         pad_token_id=tokenizer.pad_token_id, streamer=streamer, **sampling)
        worker = threading.Thread(target=_generate, args=(model, arguments))
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            write(piece, end="", flush=True)
        worker.join()
        write("")
        answer = "".join(pieces).strip()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    def command(self, line: str, write=print) -> bool:
        """Run a /command; returns False when the session should end."""
        name, _, rest = line.partition(" ")
        if name in ("/exit", "/quit"):
            return False
        if name == "/reset":
            self.history = []
            write("(history cleared)")
        elif name == "/system":
            if rest.strip():
                self.system = None if rest.strip() == "none" else rest.strip()
            write(f"(system: {self.system!r})")
        elif name == "/params":
            self.params.update(rest.split())
            write(f"({self.params.describe()})")
        else:
            write(f"(unknown command {name}; {HELP})")
        return True


@torch.no_grad()
def _generate(model, arguments: dict) -> None:
    model.generate(**arguments)


def run_chat(session: ChatSession, read=input, write=print) -> None:
    """The terminal loop: read a line, answer or run a command, until /exit or end of input."""
    write(f"chatting with {session.target.name}; {HELP}")
    while True:
        try:
            line = read("> ").strip()
        except EOFError:
            return
        if not line:
            continue
        if line.startswith("/"):
            try:
                if not session.command(line, write):
                    return
            except ConfigError as error:
                write(f"({error.problem} {error.fix or ''})".replace(" )", ")"))
            continue
        session.reply(line, write)
