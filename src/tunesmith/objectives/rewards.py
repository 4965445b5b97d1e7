"""The GRPO reward registry: what a recipe's ``grpo.rewards`` entries compute.

Each entry names a fixed kind -- never an import path -- and a weight; an answer's reward
is the weighted sum of its entries' scores:

- ``regex``: 1 when ``pattern`` occurs in the answer (Python ``re.search``), else 0;
- ``format``: 1 when the whole answer matches ``pattern`` (``re.fullmatch``), else 0;
- ``exact``: 1 when the answer equals the row's reference answer (case, surrounding
  spaces and repeated spaces ignored), else 0;
- ``length``: 1 inside ``[min_words, max_words]``, falling linearly to 0 at half / twice
  the bounds;
- ``reward_model``: a ``task: reward`` run's reward of the answer to the row's question;
- ``classifier``: a classification run's probability of ``label`` for the answer text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Scored:
    """One reward entry, ready to score a batch: ``fn(questions, answers, references) -> list[float]``."""

    name: str
    weight: float
    fn: Callable[[list[str], list[str], list[str | None]], list[float]]


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def _length_score(words: int, low: int | None, high: int | None) -> float:
    if low is not None and words < low:
        return max(0.0, 1 - (low - words) / max(low / 2, 1))
    if high is not None and words > high:
        return max(0.0, 1 - (words - high) / max(high, 1))
    return 1.0


def build_rewards(rules: list, device="cpu") -> list[Scored]:
    """The scorers of a recipe's ``grpo.rewards`` entries (model runs are loaded once, here)."""
    out = []
    for i, rule in enumerate(rules):
        name = f"{i}:{rule.type}"
        if rule.type == "regex":
            pattern = re.compile(rule.pattern)
            fn = lambda q, a, r, p=pattern: [float(bool(p.search(x))) for x in a]  # noqa: E731
        elif rule.type == "format":
            pattern = re.compile(rule.pattern, re.DOTALL)
            fn = lambda q, a, r, p=pattern: [float(bool(p.fullmatch(x.strip()))) for x in a]  # noqa: E731
        elif rule.type == "exact":
            fn = lambda q, a, r: [float(ref is not None and _normalised(x) == _normalised(ref))  # noqa: E731
                                  for x, ref in zip(a, r)]
        elif rule.type == "length":
            fn = lambda q, a, r, lo=rule.min_words, hi=rule.max_words: [  # noqa: E731
                _length_score(len(x.split()), lo, hi) for x in a]
        elif rule.type == "reward_model":
            fn = _reward_model(rule.run, device)
        else:
            fn = _classifier(rule.run, rule.label, device)
        out.append(Scored(name, rule.weight, fn))
    return out


def total_rewards(scorers: list[Scored], questions: list[str], answers: list[str],
                  references: list[str | None]) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum per answer, and each entry's mean (for the logs)."""
    total = torch.zeros(len(answers), dtype=torch.float64)
    means = {}
    for scorer in scorers:
        values = torch.tensor(scorer.fn(questions, answers, references), dtype=torch.float64)
        total += scorer.weight * values
        means[f"reward/{scorer.name}"] = float(values.mean()) if len(values) else 0.0
    return total, means


def _load_run(run: str, stage: str, device):
    """A finished run's model, checked to be a ``stage`` run.

    Raises:
        ConfigError: not a run, or a run of another stage.
    """
    from tunesmith.errors import ConfigError
    from tunesmith.methods.saved import load_trained
    from tunesmith.rundir import read_model_meta, resolve_final_dir

    final_dir, _ = resolve_final_dir(run)
    found = read_model_meta(final_dir).get("stage")
    if found != stage:
        raise ConfigError(f"grpo.rewards: {run} is a {found} run, and a {stage} run is needed here.",
                          f"Point the entry at a task: {stage} run.")
    model, tokenizer, meta = load_trained(final_dir)
    return model.to(device).eval(), tokenizer, meta


def _reward_model(run: str, device):
    from tunesmith.objectives.reward import RewardObjective

    model, tokenizer, meta = _load_run(run, "reward", device)
    objective = RewardObjective(tokenizer, meta.get("max_length") or 512, meta.get("system_prompt"))

    def score(questions, answers, references):
        out = []
        for question in dict.fromkeys(questions):  # one batch per distinct question
            idx = [i for i, q in enumerate(questions) if q == question]
            out += list(zip(idx, objective.score(model, question, [answers[i] for i in idx], device)))
        return [value for _, value in sorted(out)]

    return score


def _classifier(run: str, label: str, device):
    from tunesmith.errors import ConfigError
    from tunesmith.objectives.classification import ClassificationObjective

    model, tokenizer, meta = _load_run(run, "classification", device)
    labels = meta["labels"]
    if label not in labels:
        raise ConfigError(f"grpo.rewards: {run} has no label {label!r}; its labels are {labels}.",
                          "Set label: to one of them.")
    objective = ClassificationObjective(tokenizer, labels, meta.get("max_length") or 512)
    column = labels.index(label)

    def score(questions, answers, references):
        features = objective.encode([{"text": a or " ", "label": labels[0]} for a in answers])
        with torch.inference_mode():
            return objective.predict(model, features, 32, device)[:, column].tolist()

    return score
