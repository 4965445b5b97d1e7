"""What ``tunesmith eval`` can evaluate: a run, a ``final/`` folder, a merged export, or a base model.

:func:`load_target` turns any of them into a :class:`Target`: the model, its tokenizer,
its task, and how it is prompted (template, system prompt, length limit), so the stage
itself never asks where a model came from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.rundir import has_model_meta, resolve_final_dir

DEFAULT_MAX_LENGTH = 512


@dataclass
class Target:
    """A loaded model and how to prompt it."""

    name: str
    model: object
    tokenizer: object
    task: str  # what the model does: "causal_lm", "classification" or "reward" (a one-output classifier)
    labels: list[str] | None = None
    system_prompt: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    run_dir: Path | None = None
    base_model: str | None = None
    meta: dict = field(default_factory=dict)

    def objective(self):
        """The objective that encodes rows for this model (templates, labels, truncation)."""
        if self.task == "reward":
            from tunesmith.objectives.reward import RewardObjective

            return RewardObjective(self.tokenizer, self.max_length, self.system_prompt, overlength="truncate")
        if self.task == "classification":
            from tunesmith.objectives.classification import ClassificationObjective

            return ClassificationObjective(self.tokenizer, self.labels, self.max_length, overlength="truncate")
        from tunesmith.objectives.causal_lm import CausalLMObjective

        return CausalLMObjective(self.tokenizer, self.max_length, self.system_prompt, overlength="truncate")


def is_tunesmith_model(spec: str) -> bool:
    """A run directory, a final/ folder or an export with tunesmith.json."""
    path = Path(spec)
    return path.is_dir() and (has_model_meta(path) or has_model_meta(path / "final"))


def target_task(spec: str) -> str:
    """The task of what ``spec`` names, read without loading it (a base model is a causal LM)."""
    if is_tunesmith_model(spec):
        from tunesmith.rundir import read_model_meta

        return _task_of(read_model_meta(resolve_final_dir(spec)[0]))
    return "causal_lm"


def _task_of(meta: dict) -> str:
    # A reward model's head is a one-output classifier; it is evaluated on pairs.
    return "reward" if meta.get("stage") == "reward" else meta["task"]


def load_target(spec: str, device="cpu") -> Target:
    """Load what ``spec`` names: a Tunesmith model folder, or any causal-LM spec that
    ``models.load`` accepts (``builtin:smollm2-135m``, a hub id, a local folder).

    Raises:
        ConfigError / ModelError: nothing loadable is there.
    """
    if is_tunesmith_model(spec):
        from tunesmith.methods.saved import load_trained

        final, run_dir = resolve_final_dir(spec)
        model, tokenizer, meta = load_trained(final)
        return Target(name=spec, model=model.to(device), tokenizer=tokenizer, task=_task_of(meta),
                      labels=meta.get("labels"), system_prompt=meta.get("system_prompt"),
                      max_length=meta.get("max_length") or DEFAULT_MAX_LENGTH, run_dir=run_dir,
                      base_model=meta.get("base_model_path") or meta.get("base_model"), meta=meta)
    path = Path(spec)
    if path.exists() and not (path / "config.json").is_file():
        raise ConfigError(f"{spec} is not a model: it has no tunesmith.json, final/ or config.json.",
                          "Point to a run directory (runs/<name>), its final/ folder, an export, or a model "
                          "folder or id such as builtin:smollm2-135m.")
    from tunesmith.models.load import load_model

    model, tokenizer = load_model(spec, "causal_lm")
    return Target(name=spec, model=model.to(device).eval(), tokenizer=tokenizer, task="causal_lm", base_model=spec)


def base_of(target: Target, device="cpu") -> Target:
    """The base model of a trained target, prompted exactly like the target (the copy keeps
    its tokenizer, template and system prompt), so the two answer the very same prompts."""
    if target.base_model is None or target.meta.get("method") is None:
        raise ConfigError(f"{target.name} has no base model to compare against.", "Pass --against MODEL.")
    from tunesmith.models.load import load_model

    head = "classification" if target.task == "reward" else target.task
    model, _ = load_model(target.base_model, head, id2label=dict(enumerate(target.labels)) if target.labels else None)
    base = copy.copy(target)
    base.name, base.model, base.meta, base.run_dir = f"base ({target.meta['base_model']})", model.to(device).eval(), {}, None
    return base
