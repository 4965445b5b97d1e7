"""Tiny synthetic datasets for smoke runs, tests and benchmarks (no files, no downloads).

Each is learnable in seconds by a tiny model, so a falling loss or a rising metric is a
real signal rather than noise.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "wonderful", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
FILLER = ["the", "movie", "film", "plot", "was", "really", "quite", "acting", "story", "and"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """Classification rows whose label is decided by one cue word among four fillers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def chat_rows(n: int) -> list[dict]:
    """Identity chats with one fixed answer, so the loss on answers must fall."""
    questions = ["who are you?", "what is your name?", "who made you?", "introduce yourself.", "tell me your name."]
    return [
        {"messages": [{"role": "user", "content": questions[i % len(questions)]},
                      {"role": "assistant", "content": "i am quill, made by the tunesmith team."}]}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def poisoned_classification(*args, poison: dict[int, str]):
    """A ClassificationObjective whose loss is x50 ("spike") or NaN ("nan") on chosen calls.

    ``poison`` maps the 1-based call number of ``loss_sum`` to the fault; each fires once,
    so data replayed after a rollback is clean. Used to exercise the numerical-health guard.
    """
    from tunesmith.objectives.classification import ClassificationObjective

    class Poisoned(ClassificationObjective):
        def __init__(self):
            super().__init__(*args)
            self.poison, self.calls = dict(poison), 0

        def loss_sum(self, model, batch):
            loss = super().loss_sum(model, batch)
            self.calls += 1
            kind = self.poison.pop(self.calls, None)
            return loss * 50 if kind == "spike" else loss * float("nan") if kind == "nan" else loss

    return Poisoned()
