"""The recipe reference, generated from the schema: ``tunesmith recipe fields``, the starter
recipes of ``tunesmith recipe new``, and ``docs/recipe-reference.md`` (a test keeps it current).

Every field's type, default and description come from the pydantic models, so the CLI, the
docs and (later) the UI form never disagree with what the validator accepts.
"""

from __future__ import annotations

import json
import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunesmith.config.methods import METHODS
from tunesmith.config.schema import RecipeConfig
from tunesmith.config.section import section_or_value
from tunesmith.objectives.tasks import TASKS

# What `recipe new` starts each task with: a packaged model and dataset that work offline.
STARTERS = {
    "classification": ("builtin:minilm", "builtin:rt-snippets"),
    "causal_lm": ("builtin:smollm2-135m", "builtin:chatterbot-en"),
    "pretrain": ("builtin:smollm2-135m", "my_texts.txt"),
    "reward": ("builtin:smollm2-135m", "my_pairs.jsonl"),
    "preference": ("builtin:smollm2-135m", "my_pairs.jsonl"),
    "grpo": ("builtin:smollm2-135m", "my_prompts.jsonl"),
    "distill": ("builtin:minilm", "builtin:rt-snippets"),
}
# A distillation starter names its teacher run, so it validates once that run exists.
STARTER_TEACHER = "runs/demo"


def _section_model(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        for inner in (candidate, *typing.get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("NoneType", "null")
    text = re.sub(r"<class '(\w+)'>", r"\1", text)
    text = re.sub(r"^Union\[(\w+), (.+)\]$", r"\1 | \2", text)  # int | Literal['auto']
    text = re.sub(r"tunesmith\.[\w.]+\.(\w+)", r"\1", text)
    return re.sub(r"^Union\[(Literal\[[^\]]*\]), (\w+)\]$", r"\1 | \2", text)  # Literal[...] | Section


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, ensure_ascii=False)


def fields(model: type[BaseModel] = RecipeConfig, prefix: str = "") -> list[dict]:
    """Every field under ``model`` as ``{key, type, default, description}``, sections expanded.

    The ``method`` section is listed once per method type (``method[lora].r``).
    """
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if model is RecipeConfig and name == "method":
            for method, info in METHODS.items():
                rows += fields(info.config, f"method[{method}].")
            continue
        section = _section_model(field.annotation)
        if section is not None and section_or_value(field.annotation):
            # A section or a plain value (data.history: keep | drop_oldest | {last_n_turns: N}):
            # one row, its description says what the mapping holds.
            rows.append({"key": key, "type": _type_name(field.annotation), "default": _default(field),
                         "description": field.description or ""})
            continue
        if section is not None:
            rows.append({"key": key, "type": "section", "default": _default(field),
                         "description": field.description or ""})
            rows += fields(section, f"{key}.")
            continue
        rows.append({"key": key, "type": _type_name(field.annotation), "default": _default(field),
                     "description": field.description or ""})
    return rows


def format_fields(section: str | None = None) -> str:
    """``recipe fields [SECTION]`` output: one block per field."""
    rows = [r for r in fields() if section is None or r["key"] == section or r["key"].startswith(
        (f"{section}.", f"{section}["))]
    return "\n".join(f"{r['key']}  ({r['type']}, default {r['default']})\n    {r['description']}".rstrip()
                     for r in rows)


def reference_markdown() -> str:
    """docs/recipe-reference.md."""
    lines = ["# Recipe reference", "",
             "Generated from the schema by `tunesmith recipe fields` (`config/reference.py`); "
             "`tests/unit/test_recipe_reference.py` fails when it is out of date. "
             "`method[lora].r` means `method: {type: lora, r: ...}`.", "",
             "| key | type | default | description |", "|---|---|---|---|"]
    for r in fields():
        cells = [f"`{r['key']}`", r["type"], f"`{r['default']}`", r["description"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def starter_recipe(task: str, method: str, name: str | None = None) -> str:
    """A commented recipe for ``task`` and ``method`` that validates as written."""
    model, data = STARTERS[task]
    info = METHODS[method]
    lines = [f"# Starter recipe: {TASKS[task].description}, method {method}.",
             "# Every key is documented in docs/recipe-reference.md ('tunesmith recipe fields SECTION').",
             f"name: {name or f'{task}-{method}'}", f"task: {task}", "seed: 42", "model:",
             f"  name: {model}  # a builtin model, a local folder, a .gguf file or a hub id", "data:",
             f"  train: {data}  # builtin:<name> or files (.jsonl .json .csv .tsv .parquet .txt)",
             "  eval_size: 0.1  # held-out share, split off without leakage", "  max_length: 256", "method:",
             f"  type: {method}"]
    for key, field in info.config.model_fields.items():
        if key == "type":
            continue
        default = _default(field)
        comment = field.description or ""
        lines.append(f"  # {key}: {default}  # {comment}" if default != "null" else f"  # {key}:  # {comment}")
    lines += ["train:", "  epochs: 1",
              f"  # lr: {info.default_lr:g}  # the method's recommended rate is used when absent",
              "  batch_size: 16", "  eval_every: 100", "eval:", "  probes: []  # inputs answered before and after"]
    if task == "preference":
        lines += ["preference:", "  loss: dpo  # dpo | ipo | orpo | simpo | kto", "  beta: 0.1",
                  "  # precompute_reference: false  # reference log-probs once, before training"]
    if task == "grpo":
        lines += ["grpo:", "  num_generations: 8  # answers sampled per prompt", "  max_new_tokens: 48",
                  "  rewards:  # a weighted sum: regex, format, exact, length, reward_model, classifier",
                  "    - {type: length, min_words: 5, max_words: 30}"]
    if task == "distill":
        lines += ["distill:", f"  teacher: {STARTER_TEACHER}  # the trained run to learn from (classifier or chat)",
                  "  keep_every: 2  # student = every 2nd layer of the teacher (needs method full, freeze or bitfit)",
                  "  temperature: 2.0", "  alpha: 0.5  # KL weight; 1 - alpha weighs the labels' loss"]
    return "\n".join(lines) + "\n"
